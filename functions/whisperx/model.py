"""The WhisperX adapter: a local CTranslate2 model through `whisperx.load_model`, batched, with
the pyannote VAD bundled in the whisperx wheel (its "silero" option downloads at run time, so it
is never used here), and wav2vec2 forced alignment where a local model is configured.

`FasterWhisperPipeline.transcribe` returns only when every VAD chunk is done and keeps the
language probability to itself; the loop below is the same pipeline, yielding each segment as
its batch comes out of the model.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from events.models import Word
from events.settings import Settings
from functions.transcriber import SAMPLE_RATE, Segment, Transcript

NAME = "whisperx"
CT2_FILES = ("model.bin", "config.json", "tokenizer.json")
CHUNK_S = 30  # Whisper's window: VAD regions are merged up to this length


class ModelUnavailable(RuntimeError):
    pass


class WhisperX:
    name = NAME

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.model_dir: Path = settings.whisperx_model_path()
        self.device = settings.resolved_device()
        self.pipeline: Any = None
        self._aligners: dict[str, tuple[Any, dict[str, Any]]] = {}

    def load(self) -> None:
        missing = [name for name in CT2_FILES if not (self.model_dir / name).is_file()]
        if missing:
            raise ModelUnavailable(
                f"whisperx model directory {self.model_dir} lacks {', '.join(missing)}; "
                "run `klipnote setup` or set WHISPERX_MODEL_DIR to a CTranslate2 model"
            )
        # whisperx's aligner reads NLTK's punkt_tab; it must come from disk, never a download.
        os.environ.setdefault("NLTK_DATA", str(self.settings.nltk_data_path()))
        import whisperx  # 8-9 s on import: only in the model process, only once

        self.pipeline = whisperx.load_model(
            str(self.model_dir),
            device=self.device,
            compute_type=self.settings.resolved_compute_type(),
            vad_method="pyannote",
            threads=self.settings.cpu_threads,
            local_files_only=True,
        )

    # -- transcription ------------------------------------------------------------------------

    def transcribe(
        self,
        audio: np.ndarray,
        language: str | None,
        on_segment: Callable[[Segment], None],
        on_progress: Callable[[float], None],
    ) -> Transcript:
        from faster_whisper.tokenizer import Tokenizer
        from whisperx.vads import Pyannote

        pipeline = self.pipeline
        transcript = Transcript(language=language)
        if language is None:
            transcript.language, transcript.language_probability = self.detect_language(audio)
        language = transcript.language
        regions = pipeline.vad_model(
            {"waveform": Pyannote.preprocess_audio(audio), "sample_rate": SAMPLE_RATE}
        )
        chunks = Pyannote.merge_chunks(
            regions,
            CHUNK_S,
            onset=pipeline._vad_params["vad_onset"],
            offset=pipeline._vad_params["vad_offset"],
        )
        if not chunks:  # silence: nothing to decode
            on_progress(1.0)
            transcript.alignment = "skipped: no speech"
            return transcript
        pipeline.tokenizer = Tokenizer(
            pipeline.model.hf_tokenizer,
            pipeline.model.model.is_multilingual,
            task="transcribe",
            language=language,
        )
        aligner = self._aligner(language)
        transcript.alignment = "wav2vec2" if aligner else f"skipped: no alignment model for {language!r}"

        def inputs() -> Any:
            for chunk in chunks:
                yield {"inputs": audio[int(chunk["start"] * SAMPLE_RATE) : int(chunk["end"] * SAMPLE_RATE)]}

        batch_size = self.settings.batch_size
        outputs = pipeline(inputs(), batch_size=batch_size, num_workers=0)
        for index, output in enumerate(outputs):
            text, logprob = output["text"], output["avg_logprob"]
            if batch_size in (0, 1, None):
                text, logprob = text[0], logprob[0]
            chunk = chunks[index]
            segment = Segment(
                start=round(chunk["start"], 3),
                end=round(chunk["end"], 3),
                text=text.strip(),
                avg_logprob=logprob,
                language=language,
            )
            for part in self._align(segment, audio, aligner) if aligner else [segment]:
                transcript.segments.append(part)
                on_segment(part)
            on_progress((index + 1) / len(chunks))
        return transcript

    def detect_language(self, audio: np.ndarray) -> tuple[str, float]:
        """Language and its probability from the first 30 s (whisperx logs but drops it)."""
        from whisperx.audio import N_SAMPLES, log_mel_spectrogram

        model = self.pipeline.model
        mel = log_mel_spectrogram(
            audio[:N_SAMPLES],
            n_mels=model.feat_kwargs.get("feature_size") or 80,
            padding=max(0, N_SAMPLES - audio.shape[0]),
        )
        token, probability = model.model.detect_language(model.encode(mel))[0][0]
        return token[2:-2], float(probability)

    # -- forced alignment ---------------------------------------------------------------------

    def _aligner(self, language: str | None) -> tuple[Any, dict[str, Any]] | None:
        path = self.settings.alignment_models.get(language or "")
        if path is None:
            return None
        if language not in self._aligners:
            import whisperx

            self._aligners[language or ""] = whisperx.load_align_model(
                language, self.device, model_name=str(path), model_cache_only=True
            )
        return self._aligners[language or ""]

    def _align(
        self, segment: Segment, audio: np.ndarray, aligner: tuple[Any, dict[str, Any]]
    ) -> list[Segment]:
        """Word times from wav2vec2 (the aligner may split a segment at sentence ends)."""
        import whisperx

        model, metadata = aligner
        result = whisperx.align(
            [{"start": segment.start, "end": segment.end, "text": segment.text}],
            model,
            metadata,
            audio,
            self.device,
            return_char_alignments=False,
        )
        parts = []
        for aligned in result["segments"]:
            words = [
                Word(word=w["word"], start=w.get("start"), end=w.get("end"), score=w.get("score"))
                for w in aligned.get("words", [])
            ]
            parts.append(
                Segment(
                    start=float(aligned.get("start", segment.start)),
                    end=float(aligned.get("end", segment.end)),
                    text=aligned["text"].strip(),
                    words=words or None,
                    avg_logprob=segment.avg_logprob,
                    language=segment.language,
                )
            )
        return parts or [segment]
