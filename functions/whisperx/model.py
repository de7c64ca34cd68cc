"""The WhisperX adapter: a local CTranslate2 model through `whisperx.load_model`, batched,
with the pyannote VAD bundled in the whisperx wheel (its "silero" option downloads at run
time, so it is never used here)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from events.settings import Settings
from functions.transcriber import Segment, Transcript

NAME = "whisperx"
CT2_FILES = ("model.bin", "config.json", "tokenizer.json")


class ModelUnavailable(RuntimeError):
    pass


class WhisperX:
    name = NAME

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.model_dir: Path = settings.whisperx_model_path()
        self.pipeline: Any = None

    def load(self) -> None:
        missing = [name for name in CT2_FILES if not (self.model_dir / name).is_file()]
        if missing:
            raise ModelUnavailable(
                f"whisperx model directory {self.model_dir} lacks {', '.join(missing)}; "
                "run `klipnote setup` or set WHISPERX_MODEL_DIR to a CTranslate2 model"
            )
        import whisperx  # 8-9 s on import: only in the model process, only once

        self.pipeline = whisperx.load_model(
            str(self.model_dir),
            device=self.settings.resolved_device(),
            compute_type=self.settings.resolved_compute_type(),
            vad_method="pyannote",
            threads=self.settings.cpu_threads,
            local_files_only=True,
        )

    def transcribe(
        self,
        audio: np.ndarray,
        language: str | None,
        on_segment: Callable[[Segment], None],
        on_progress: Callable[[float], None],
    ) -> Transcript:
        result = self.pipeline.transcribe(
            audio,
            batch_size=self.settings.batch_size,
            language=language,
            progress_callback=lambda percent: on_progress(percent / 100.0),
        )
        transcript = Transcript(language=result.get("language"))
        for raw in result["segments"]:
            segment = Segment(
                start=float(raw["start"]),
                end=float(raw["end"]),
                text=raw["text"].strip(),
                avg_logprob=raw.get("avg_logprob"),
            )
            transcript.segments.append(segment)
            on_segment(segment)
        return transcript
