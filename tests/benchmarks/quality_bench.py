"""Transcript quality of the platform against the bare pipelines it is built on, clip by clip.

What it measures: every clip of ../shared/audio/dev (10 English, 10 Mandarin utterances, each with
its reference; SOURCES.md there) and the other clips with a reference in ../shared/audio (jfk.flac,
librispeech-1995-1837-0001.wav, aishell-BAC009S0724W0121.wav, sr-chinese.flac; their language from
the table in ../shared/audio/SOURCES.md) go through three pipelines, all on the bundled
whisper-base (CTranslate2, int8, CPU, 2 threads):

- pipeline: the platform. By default the embedded stack (`EmbeddedStack`, whisperx and belle2
  enabled, free ports): each clip uploaded through the HTTP API (`POST /v1/jobs`, no language, no
  model: the platform routes by the language it detects), one after another, scored on its
  `transcript.txt` (already optimized). With `--adapters`, instead, the two model adapters
  in-process (English clips to whisperx, Mandarin ones to belle2, the language given), their
  segments through the optimize step the platform applies (`Optimizer`: doubtful segments,
  loops and known silence phrases dropped, Traditional → Simplified) and written as transcript.txt
  is. With `--no-stack`, none: only the bare pipelines.
- bare faster-whisper: `WhisperModel(...).transcribe(audio, beam_size=5)`, defaults otherwise,
  the language detected by it.
- bare whisperx: `whisperx.load_model(..., vad_method="pyannote")` then
  `.transcribe(audio, batch_size=4)`, no alignment, the language detected by it.

Both bare pipelines hear the same audio as the platform's models do (`functions.transcriber.audio.decode`:
16 kHz mono float32), so only the pipeline differs.

Scoring: English WER after Whisper's English normaliser (lowercase, punctuation removed,
contractions expanded, numbers standardised); Mandarin CER on Han characters only, both sides
Traditional → Simplified first. An empty transcript scores as all deletions.
big_buck_bunny_small.mp4 has no speech and no reference: it is reported apart (what each pipeline
wrote for it; ideally nothing).

Columns of the per-clip table:
- clip, lang (the reference's language), dur s (decoded seconds);
- pipeline / faster-whisper / whisperx: errors (substitutions + deletions + insertions, in words
  for English, characters for Mandarin), the rate (WER or CER) in brackets, and for the bare
  pipelines the language each detected (with its probability when under 0.9);
- better bare: the bare pipeline with fewer errors on that clip (fw, wx, or "=" for a tie) and its
  errors;
- Δ: pipeline errors - better bare errors (words or characters; negative: the pipeline is better);
- model, detected (p), routing: the job record's `model`, `detected_language` and
  `language_probability`, `routing_reason` (for `--adapters`: the adapter, the language given);
- wall s: the job's wall time, from upload to its transcript downloaded (for `--adapters`: the
  model and optimize time).

Then the means per language and pipeline ("better bare" is the mean of the per-clip minimum of the
two bare pipelines), for all clips and for the dev set alone; the two checks of the quality issue
(no clip where the pipeline is worse than the better bare by more than 1 word / 2 characters; each
language's mean at most 0.01 above the better bare mean); the texts of every clip where the
pipeline is worse than the better bare; and the time each pipeline took. A job that failed scores
as an empty transcript, its error in the routing column. The report goes to stdout, progress (each
clip's first words as it is done) and the models' logs to stderr.

    .venv/bin/python -m tests.benchmarks.quality_bench [--no-stack|--adapters] [--markdown]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import re
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import jiwer
import numpy as np

from events.models import SegmentTranscribed
from events.settings import Settings
from functions.optimize.chinese import to_simplified
from functions.transcriber.audio import DecodedAudio, decode
from functions.transcriber.hub import offline
from tests.support.paths import AUDIO

DEV = AUDIO / "dev"
SILENT = "big_buck_bunny_small.mp4"
LANGUAGES = ("en", "zh")
# The quality issue's thresholds: per clip, in words (English) or characters (Mandarin); per mean.
CLIP_SLACK = {"en": 1, "zh": 2}
MEAN_SLACK = 0.01
UNIT = {"en": "words", "zh": "chars"}
METRIC = {"en": "WER", "zh": "CER"}
THREADS = 2
COMPUTE_TYPE = "int8"
BEAM_SIZE = 5
BATCH_SIZE = 4
# A bare pipeline's detected language is shown with its probability when it is below this.
SURE = 0.9
JOB_TIMEOUT_S = 900.0


# -- clips ----------------------------------------------------------------------------------------


@dataclass
class Clip:
    path: Path
    language: str | None  # None: no speech, no reference
    reference: str | None
    dev: bool
    audio: DecodedAudio | None = None

    @property
    def name(self) -> str:
        return self.path.name

    def samples(self) -> np.ndarray:
        """16 kHz mono float32, the whole clip."""
        assert self.audio is not None
        return self.audio.window(0, self.audio.samples)


def _reference(path: Path) -> str:
    return path.with_suffix(".txt").read_text(encoding="utf-8").strip()


def clips() -> list[Clip]:
    """The dev set (language from the name's prefix), then the other clips of ../shared/audio
    (language from SOURCES.md's table), then the clip without speech."""
    found = [
        Clip(path, path.name[:2], _reference(path), dev=True)
        for path in sorted(DEV.iterdir())
        if path.suffix in (".wav", ".flac") and path.name[:2] in LANGUAGES
    ]
    table = {}
    for line in (AUDIO / "SOURCES.md").read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) > 2 and (AUDIO / cells[0]).is_file():
            table[cells[0]] = cells[1]
    for name, language in sorted(table.items()):
        if language in LANGUAGES:
            found.append(Clip(AUDIO / name, language, _reference(AUDIO / name), dev=False))
    if (AUDIO / SILENT).is_file():
        found.append(Clip(AUDIO / SILENT, None, None, dev=False))
    return found


# -- scoring --------------------------------------------------------------------------------------


def english_words(text: str) -> list[str]:
    """The words of `text` after Whisper's English normaliser (openai-whisper's
    `EnglishTextNormalizer`, as transformers ships it; the one the Whisper paper's WERs use):
    lowercase, no punctuation, contractions expanded ("I'm" → "i am"), numbers and British
    spellings standardised, fillers removed."""
    return _english()(text).split()


@functools.cache
def _english() -> Callable[[str], str]:
    # transformers reads the hub-offline policy at import: imported once main() has applied it.
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    normalizer: Callable[[str], str] = EnglishTextNormalizer({})
    return normalizer


def han(text: str) -> str:
    """The Han characters of `text`, Traditional → Simplified."""
    return re.sub(r"[^\u3400-\u4dbf\u4e00-\u9fff]", "", to_simplified(text))


@dataclass
class Score:
    errors: int
    length: int  # reference words or characters

    @property
    def rate(self) -> float:
        return self.errors / self.length


def score(reference: str, hypothesis: str, language: str) -> Score:
    """Word errors (English) or Han character errors (Mandarin) of `hypothesis`."""
    if language == "zh":
        ref, hyp = han(reference), han(hypothesis)
        if not hyp:
            return Score(len(ref), len(ref))
        chars = jiwer.process_characters(ref, hyp)
        return Score(chars.substitutions + chars.deletions + chars.insertions, len(ref))
    ref_words, hyp_words = english_words(reference), english_words(hypothesis)
    if not hyp_words:
        return Score(len(ref_words), len(ref_words))
    words = jiwer.process_words(" ".join(ref_words), " ".join(hyp_words))
    return Score(words.substitutions + words.deletions + words.insertions, len(ref_words))


def units(text: str, language: str | None) -> int:
    """How much a transcript says: words, or Han characters for Mandarin (for the silent clip:
    both, whichever is more)."""
    if language == "zh":
        return len(han(text))
    if language == "en":
        return len(english_words(text))
    return max(len(english_words(text)), len(han(text)))


# -- what one pipeline made of one clip -----------------------------------------------------------


@dataclass
class Heard:
    text: str
    language: str | None = None
    probability: float | None = None
    model: str | None = None
    reason: str | None = None
    seconds: float | None = None  # wall time of this clip
    note: str = ""  # a failed job's code, a timeout
    score: Score | None = None


@dataclass
class Run:
    """One pipeline over every clip: what it heard per clip name, and its timing."""

    label: str
    heard: dict[str, Heard] = field(default_factory=dict)
    load_s: float = 0.0
    error: str | None = None  # why it did not run (the stack did not start)

    def total_s(self) -> float:
        return sum(h.seconds or 0.0 for h in self.heard.values())


def timed(run: Run, clip: Clip, hear: Callable[[Clip], Heard]) -> None:
    started = time.perf_counter()
    heard = hear(clip)
    if heard.seconds is None:
        heard.seconds = time.perf_counter() - started
    if clip.language and clip.reference is not None:
        heard.score = score(clip.reference, heard.text, clip.language)
    run.heard[clip.name] = heard
    print(f"  {run.label}: {clip.name} {heard.seconds:.2f} s: {heard.text.strip()[:100]!r}", file=sys.stderr)


# -- bare pipelines -------------------------------------------------------------------------------


def bare_faster_whisper(all_clips: list[Clip], model_dir: Path) -> Run:
    from faster_whisper import WhisperModel

    run = Run("faster-whisper")
    started = time.perf_counter()
    model = WhisperModel(str(model_dir), device="cpu", compute_type=COMPUTE_TYPE, cpu_threads=THREADS)
    run.load_s = time.perf_counter() - started

    def hear(clip: Clip) -> Heard:
        segments, info = model.transcribe(clip.samples(), beam_size=BEAM_SIZE)
        text = " ".join(segment.text.strip() for segment in segments)  # the generator does the work
        return Heard(text, info.language, info.language_probability)

    for clip in all_clips:
        timed(run, clip, hear)
    return run


class DetectedLanguage(logging.Handler):
    """The probability bare whisperx detected its language with: it only logs it."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.probability: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        found = re.match(r"Detected language: \S+ \(([0-9.]+)\)", record.getMessage())
        if found:
            self.probability = float(found.group(1))


def bare_whisperx(all_clips: list[Clip], model_dir: Path) -> Run:
    import torch
    import whisperx

    torch.set_num_threads(THREADS)  # the VAD runs on torch: held to the decoder's threads
    detected = DetectedLanguage()
    logging.getLogger("whisperx.asr").addHandler(detected)
    run = Run("whisperx")
    started = time.perf_counter()
    pipeline = whisperx.load_model(
        str(model_dir),
        device="cpu",
        compute_type=COMPUTE_TYPE,
        vad_method="pyannote",
        threads=THREADS,
        local_files_only=True,
    )
    run.load_s = time.perf_counter() - started

    def hear(clip: Clip) -> Heard:
        detected.probability = None
        result = pipeline.transcribe(clip.samples(), batch_size=BATCH_SIZE)
        text = " ".join(str(segment["text"]).strip() for segment in result["segments"])
        return Heard(text, result.get("language"), detected.probability)

    for clip in all_clips:
        timed(run, clip, hear)
    return run


# -- the platform ---------------------------------------------------------------------------------


def through_adapters(all_clips: list[Clip], settings: Settings) -> Run:
    """The two adapters in-process, the language given, then the platform's optimize step."""
    from functions.belle2.model import Belle2
    from functions.optimize.cues import Optimizer
    from functions.optimize.outputs import to_txt
    from functions.transcriber import ModelAdapter, Segment, TranscriptionFunction
    from functions.whisperx.model import WhisperX

    run = Run("adapters")
    started = time.perf_counter()
    functions = {}
    adapters: list[ModelAdapter] = [WhisperX(settings), Belle2(settings)]
    for adapter in adapters:
        adapter.load()
        functions[adapter.name] = TranscriptionFunction(adapter, settings)
    optimizer = Optimizer.from_settings(settings)
    run.load_s = time.perf_counter() - started

    def hear(clip: Clip) -> Heard:
        assert clip.audio is not None
        model = "belle2" if clip.language == "zh" else "whisperx"
        segments: list[Segment] = []

        def put(item: Segment | float) -> None:
            if isinstance(item, Segment):
                segments.append(item)

        transcript = functions[model].transcribe_audio(clip.audio, clip.language, put)
        events = [
            SegmentTranscribed(
                job_id="bench", run_id="bench", sequence=index, start=s.start, end=s.end, text=s.text,
                words=s.words, language=s.language, avg_logprob=s.avg_logprob,
                no_speech_prob=s.no_speech_prob,
            )
            for index, s in enumerate(segments)
        ]  # fmt: skip
        optimized = optimizer.run(events, clip.audio.seconds, transcript.language)
        removed = {k: v for k, v in optimized.stats["removed"].items() if v and k != "characters"}
        return Heard(
            to_txt(optimized.cues),
            transcript.language,
            transcript.language_probability,
            model,
            "language given" if clip.language else "language detected by whisperx",
            note=", ".join(f"{k} {v}" for k, v in removed.items()),
        )

    for clip in all_clips:
        # The silent clip has no language: whisperx detects one, as the platform would.
        timed(run, clip, hear)
    return run


def through_stack(all_clips: list[Clip], settings: Settings, scratch: Path) -> Run:
    """Each clip uploaded through the API of an embedded stack, one after another, no language and
    no model given; scored on the job's transcript.txt."""
    from events.lifecycle import JobState
    from infra.client import KlipNote
    from infra.embedded.stack import EmbeddedStack, Ports
    from infra.models import assemble_whisper_base, derive_whisper_base_hf

    run = Run("stack")
    stack_settings = settings.model_copy(update={"enabled_models": ["whisperx", "belle2"]})
    cache = settings.model_cache_dir
    derive_whisper_base_hf(assemble_whisper_base(cache), stack_settings.belle2_model_path())
    started = time.perf_counter()
    try:
        with EmbeddedStack(scratch / "stack", ports=Ports.free(), settings=stack_settings) as stack:
            run.load_s = time.perf_counter() - started
            with KlipNote(stack.api_url, stack.settings.api_key, timeout=120) as api:

                def hear(clip: Clip) -> Heard:
                    job_id = api.submit(clip.path).id
                    job = api.wait_finished(job_id, timeout=JOB_TIMEOUT_S)
                    text, note = "", ""
                    if job.state == JobState.COMPLETED:
                        target = scratch / f"{job_id}.txt"
                        text = api.download(job_id, "txt", target).read_text(encoding="utf-8")
                    elif job.state == JobState.FAILED:
                        code, message = (job.error.code, job.error.message) if job.error else (None, None)
                        note = f"failed: {code}: {message}"
                    else:
                        note = f"still {job.state.value} after {JOB_TIMEOUT_S:g} s"
                    return Heard(
                        text,
                        job.detected_language,
                        job.language_probability,
                        job.model,
                        job.routing_reason,
                        note=note,
                    )

                for clip in all_clips:
                    timed(run, clip, hear)
    except Exception as error:  # the benchmark reports the bare pipelines all the same
        traceback.print_exc()
        run.error = f"{type(error).__name__}: {error}"
    return run


# -- report ---------------------------------------------------------------------------------------


def table(headers: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in [headers, *rows])  # fmt: skip


def cell(heard: Heard | None, with_language: bool) -> str:
    if heard is None or heard.score is None:
        return "—"
    text = f"{heard.score.errors} ({heard.score.rate:.3f})"
    if with_language:
        text += f" {heard.language or '?'}"
        if heard.probability is not None and heard.probability < SURE:
            text += f" ({heard.probability:.2f})"
    if heard.note.startswith(("failed", "still")):
        text += " ✗"
    return text


def better_bare(clip: Clip, fw: Run, wx: Run) -> tuple[str, int] | None:
    a, b = fw.heard.get(clip.name), wx.heard.get(clip.name)
    if a is None or b is None or a.score is None or b.score is None:
        return None
    if a.score.errors == b.score.errors:
        return "=", a.score.errors
    return ("fw", a.score.errors) if a.score.errors < b.score.errors else ("wx", b.score.errors)


def mean(values: list[float]) -> str:
    return f"{statistics.fmean(values):.3f}" if values else "—"


def report(all_clips: list[Clip], fw: Run, wx: Run, pipeline: Run | None, args: argparse.Namespace) -> None:
    markdown = args.markdown
    scored = [clip for clip in all_clips if clip.language]
    heading = "### " if markdown else ""
    what = {
        None: "none (--no-stack: bare pipelines only)",
        "stack": "the embedded stack through its HTTP API (no language, no model given)",
        "adapters": "the whisperx and belle2 adapters in-process (language given) + optimize",
    }[pipeline.label if pipeline else None]
    print(f"\n{heading}Quality per clip\n")
    print(f"pipeline: {what}. Errors in words (en) or Han characters (zh), rate in brackets.\n")
    if pipeline is not None and pipeline.error:
        print(f"**the pipeline did not run**: {pipeline.error}\n")
    headers = ["clip", "lang", "dur s", "pipeline", "faster-whisper", "whisperx", "better bare", "Δ",
               "model", "detected (p)", "routing", "wall s"]  # fmt: skip
    rows = []
    worse: list[Clip] = []
    failing: list[str] = []
    for clip in scored:
        assert clip.language is not None and clip.audio is not None
        heard = pipeline.heard.get(clip.name) if pipeline else None
        best = better_bare(clip, fw, wx)
        delta = "—"
        if heard is not None and heard.score is not None and best is not None:
            difference = heard.score.errors - best[1]
            delta = f"{difference:+d}"
            if difference > 0:
                worse.append(clip)
            if difference > CLIP_SLACK[clip.language]:
                failing.append(f"{clip.name} ({difference:+d} {UNIT[clip.language]})")
        detected = "—"
        if heard is not None and heard.language:
            detected = heard.language
            if heard.probability is not None:
                detected += f" ({heard.probability:.2f})"
        routing = "—" if heard is None else (heard.reason or "?")
        if heard is not None and heard.note:
            routing += f"; {heard.note}"
        rows.append([
            clip.name, clip.language, f"{clip.audio.seconds:.1f}", cell(heard, False),
            cell(fw.heard.get(clip.name), True), cell(wx.heard.get(clip.name), True),
            f"{best[0]} {best[1]}" if best else "—", delta,
            (heard.model or "?") if heard else "—", detected, routing,
            f"{heard.seconds:.2f}" if heard and heard.seconds is not None else "—",
        ])  # fmt: skip
    print(table(headers, rows, markdown))

    print(f"\n{heading}Means\n")
    print("WER (en) / CER (zh); better bare: the mean of the per-clip minimum of the two bare pipelines.\n")
    mean_rows = []
    mean_checks = []
    for language in LANGUAGES:
        for subset, members in (("all", scored), ("dev", [c for c in scored if c.dev])):
            chosen = [c for c in members if c.language == language]

            def rates(run: Run | None, chosen: list[Clip] = chosen) -> list[float]:
                if run is None:
                    return []
                found = [run.heard.get(c.name) for c in chosen]
                return [h.score.rate for h in found if h is not None and h.score is not None]

            fw_rates, wx_rates, own = rates(fw), rates(wx), rates(pipeline)
            best_rates = [min(a, b) for a, b in zip(fw_rates, wx_rates, strict=True)]
            gap = "—"
            if own and len(own) == len(best_rates):
                ours, theirs = statistics.fmean(own), statistics.fmean(best_rates)
                gap = f"{ours - theirs:+.3f}"
                if subset == "all":
                    verdict = "within" if ours - theirs <= MEAN_SLACK else "NOT within"
                    mean_checks.append(
                        f"{language}: pipeline mean {METRIC[language]} {ours:.3f}, better bare {theirs:.3f} "
                        f"(Δ {gap}): {verdict} {MEAN_SLACK}"
                    )
            mean_rows.append([
                language, subset, str(len(chosen)), METRIC[language], mean(own), mean(fw_rates),
                mean(wx_rates), mean(best_rates), gap,
            ])  # fmt: skip
    print(table(["lang", "clips", "n", "metric", "pipeline", "faster-whisper", "whisperx", "better bare",
                 "pipeline - better bare"], mean_rows, markdown))  # fmt: skip

    print(f"\n{heading}Checks\n")
    if pipeline is None or pipeline.error:
        print("no pipeline results: nothing to check")
    else:
        slack = ", ".join(f"{CLIP_SLACK[lang]} {UNIT[lang]} ({lang})" for lang in LANGUAGES)
        verdict = "PASS" if not failing else "FAIL: " + "; ".join(failing)
        print(f"- clips where the pipeline is worse than the better bare by more than {slack}: {verdict}")
        for line in mean_checks:
            print(f"- {line}")

    if worse:
        print(f"\n{heading}Where the pipeline is worse than the better bare\n")
        for clip in worse:
            assert pipeline is not None and clip.language is not None
            print(f"{clip.name} ({clip.language}):")
            texts = [("reference", None)] + [(run.label, run.heard[clip.name]) for run in (pipeline, fw, wx)]
            for label, heard in texts:
                text = clip.reference if heard is None else heard.text
                errors = "" if heard is None or heard.score is None else f" [{heard.score.errors}]"
                print(f"    {label:<15}{errors:>5} {' '.join((text or '').split())}")
            print()

    silent = [clip for clip in all_clips if not clip.language]
    if silent:
        print(f"\n{heading}No speech, no reference\n")
        silent_rows = []
        for clip in silent:
            for run in (pipeline, fw, wx):
                if run is None or clip.name not in run.heard:
                    continue
                heard = run.heard[clip.name]
                said = " ".join(heard.text.split())
                silent_rows.append([clip.name, run.label, str(units(said, None)), heard.language or "—",
                                    f"“{said}”" if said else "(nothing)"])  # fmt: skip
        print(table(["clip", "pipeline", "words/chars", "language", "text"], silent_rows, markdown))

    print(f"\n{heading}Time\n")
    audio_s = sum(clip.audio.seconds for clip in all_clips if clip.audio is not None)
    time_rows = []
    for run in (pipeline, fw, wx):
        if run is None or not run.heard:
            continue
        total = run.total_s()
        start = "stack start" if run.label == "stack" else "model load"
        time_rows.append([run.label, f"{start} {run.load_s:.1f} s", f"{total:.1f} s",
                          f"{audio_s / total:.1f}x" if total else "—"])  # fmt: skip
    time_headers = ["pipeline", "start", f"all clips ({audio_s:.0f} s of audio)", "real time"]
    print(table(time_headers, time_rows, markdown))


# -- main -----------------------------------------------------------------------------------------


def decoded(all_clips: list[Clip], scratch: Path) -> Iterator[Clip]:
    for index, clip in enumerate(all_clips):
        clip.audio = decode(clip.path, scratch / f"{index}.s16le")
        yield clip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--no-stack", action="store_true", help="only the bare pipelines")
    choice.add_argument("--adapters", action="store_true", help="the adapters in-process, not the stack")
    parser.add_argument("--markdown", action="store_true", help="tables in Markdown")
    args = parser.parse_args()
    # The models are local: whisperx and transformers (imported below) must never try a hub.
    offline()

    from infra.models import assemble_whisper_base, derive_whisper_base_hf

    settings = Settings()
    model_dir = settings.whisperx_model_path()
    assemble_whisper_base(settings.model_cache_dir)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="quality-bench-") as scratch:
        # Stdout is the report's: whisperx logs to stdout (its handler is made on import, here).
        with contextlib.redirect_stdout(sys.stderr):
            all_clips = list(decoded(clips(), Path(scratch)))
            fw = bare_faster_whisper(all_clips, model_dir)
            wx = bare_whisperx(all_clips, model_dir)
            pipeline: Run | None = None
            if args.adapters:
                derive_whisper_base_hf(model_dir, settings.belle2_model_path())
                pipeline = through_adapters(all_clips, settings)
            elif not args.no_stack:
                pipeline = through_stack(all_clips, settings, Path(scratch))
        report(all_clips, fw, wx, pipeline, args)
    print(f"\nwhole run: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
