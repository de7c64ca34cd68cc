"""Transcript quality of the whisperx function's adapter on ../shared/audio/dev (10 English, 10
Mandarin utterances with references): WER for English, CER for Mandarin (Simplified, Han
characters only), per clip and mean, with the language given; and how many segments optimize
would drop as doubtful (hallucinations.doubtful). One run, the bundled whisper-base.

    .venv/bin/python -m tests.benchmarks.quality_bench
"""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path

import jiwer

from events.models import SegmentTranscribed
from events.settings import Settings
from functions.media import decode
from functions.optimize.chinese import to_simplified
from functions.optimize.hallucinations import doubtful
from functions.transcriber import Segment, TranscriptionFunction
from functions.whisperx.model import WhisperX
from tests.conftest import AUDIO

DEV = AUDIO / "dev"


def words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]", " ", text.lower()).split())


def han(text: str) -> str:
    return re.sub(r"[^\u4e00-\u9fff]", "", to_simplified(text))


def main() -> None:
    settings = Settings()
    adapter = WhisperX(settings)
    adapter.load()
    function = TranscriptionFunction(adapter, settings)
    errors: dict[str, list[float]] = {"en": [], "zh": []}
    dropped, audio_s, model_s = 0, 0.0, 0.0
    for clip in sorted(DEV.iterdir()):
        if clip.suffix not in (".wav", ".flac"):
            continue
        language = clip.name[:2]
        with tempfile.TemporaryDirectory() as scratch:
            audio = decode(clip, Path(scratch) / "audio.s16le")
            segments: list[Segment] = []

            def keep(item: Segment | float, into: list[Segment] = segments) -> None:
                if isinstance(item, Segment):
                    into.append(item)

            started = time.perf_counter()
            function.transcribe_audio(audio, language, keep)
            model_s += time.perf_counter() - started
            audio_s += audio.seconds
        kept = []
        for s in segments:
            event = SegmentTranscribed(
                job_id="j", run_id="r", sequence=0, start=s.start, end=s.end, text=s.text, words=s.words,
                avg_logprob=s.avg_logprob, no_speech_prob=s.no_speech_prob,
            )  # fmt: skip
            if doubtful(event):
                dropped += 1
            else:
                kept.append(s.text)
        reference = clip.with_suffix(".txt").read_text(encoding="utf-8").strip()
        hypothesis = " ".join(kept)
        if language == "zh":
            error = jiwer.cer(han(reference), han(hypothesis) or "-")
        else:
            error = jiwer.wer(words(reference), words(hypothesis) or "-")
        errors[language].append(error)
        print(f"{clip.name}: {'CER' if language == 'zh' else 'WER'} {error:.3f}")
    print(f"mean WER (en, {len(errors['en'])} clips) {sum(errors['en']) / len(errors['en']):.3f}; "
          f"mean CER (zh, {len(errors['zh'])} clips) {sum(errors['zh']) / len(errors['zh']):.3f}; "
          f"doubtful segments dropped {dropped}; model {audio_s / model_s:.1f}x real time")  # fmt: skip


if __name__ == "__main__":
    main()
