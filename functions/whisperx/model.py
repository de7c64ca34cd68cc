"""The WhisperX adapter: a local CTranslate2 model through `whisperx.load_model`, batched, with
the pyannote VAD bundled in the whisperx wheel (its "silero" option downloads at run time, so it
is never used here), and wav2vec2 forced alignment where a local model is configured.

`FasterWhisperPipeline.transcribe` returns only when every VAD chunk is done and keeps the
language probability to itself; the loop below is the same pipeline, yielding each segment as
its batch comes out of the model.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from events.models import Word
from events.settings import Settings
from functions.transcriber import SAMPLE_RATE, JobFailed, ModelUnavailable, Segment, Transcript

NAME = "whisperx"
CT2_FILES = ("model.bin", "config.json", "tokenizer.json")


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
        import torch
        import whisperx  # 8-9 s on import: only in the model process, only once

        if self.device == "cpu":
            # The VAD and the aligner run on torch: held to the same threads as the decoder, or
            # replicas sharing a machine each spin a thread per core and slow one another down.
            torch.set_num_threads(self.settings.cpu_threads)

        self.pipeline = whisperx.load_model(
            str(self.model_dir),
            device=self.device,
            compute_type=self.settings.resolved_compute_type(),
            vad_method="pyannote",
            threads=self.settings.cpu_threads,
            local_files_only=True,
        )
        # Configured aligners load now: a wrong path fails readiness, not the first job in that language.
        for language in self.settings.alignment_models:
            self._aligner(language)

    # -- transcription ------------------------------------------------------------------------

    def transcribe(
        self,
        audio: np.ndarray,
        language: str | None,
        on_segment: Callable[[Segment], None],
        on_progress: Callable[[float], None],
    ) -> Transcript:
        from faster_whisper.tokenizer import _LANGUAGE_CODES, Tokenizer
        from whisperx.audio import CHUNK_LENGTH
        from whisperx.vads import Pyannote

        if language is not None and language not in _LANGUAGE_CODES:
            raise JobFailed("language_unsupported", f"whisperx cannot transcribe language {language!r}")
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
            CHUNK_LENGTH,  # Whisper's window: VAD regions are merged up to this length
            onset=pipeline._vad_params["vad_onset"],
            offset=pipeline._vad_params["vad_offset"],
        )
        if not chunks:  # silence: nothing to decode
            on_progress(1.0)
            transcript.alignment = "skipped: no speech"
            return transcript
        model = pipeline.model
        multilingual = model.model.is_multilingual
        tokenizer = Tokenizer(model.hf_tokenizer, multilingual, task="transcribe", language=language)
        aligner = self._aligner(language)
        skipped = f"skipped: no alignment model for {language!r}; word times from the decoder"
        transcript.alignment = "wav2vec2" if aligner else skipped
        done = 0
        for segment in self._decode(audio, chunks, tokenizer, with_words=aligner is None):
            for part in self._align(segment, audio, aligner) if aligner else [segment]:
                transcript.segments.append(part)
                on_segment(part)
            done += 1
            on_progress(done / len(chunks))
        return transcript

    def _decode(
        self, audio: np.ndarray, chunks: list[dict[str, Any]], tokenizer: Any, *, with_words: bool
    ) -> Iterator[Segment]:
        """WhisperX's batched decoding (`WhisperModel.generate_segment_batched`), done here so the
        encoder output stays at hand: without a wav2vec2 aligner, word times come from the
        decoder's cross-attention on it (faster-whisper's `find_alignment`), at the cost of one
        extra decoder pass per batch instead of a second encoder pass."""
        from faster_whisper.transcribe import merge_punctuations
        from whisperx.audio import HOP_LENGTH, N_SAMPLES, log_mel_spectrogram

        model, options = self.pipeline.model, self.pipeline.options
        n_mels = model.feat_kwargs.get("feature_size") or 80
        previous = tokenizer.encode(" " + options.initial_prompt.strip()) if options.initial_prompt else []
        prompt = model.get_prompt(
            tokenizer, previous, without_timestamps=True, prefix=options.prefix, hotwords=options.hotwords
        )
        size = max(self.settings.batch_size, 1)
        for first in range(0, len(chunks), size):
            batch = chunks[first : first + size]
            pieces = [audio[int(c["start"] * SAMPLE_RATE) : int(c["end"] * SAMPLE_RATE)] for c in batch]
            features = np.stack(
                [
                    np.asarray(log_mel_spectrogram(piece, n_mels=n_mels, padding=N_SAMPLES - len(piece)))
                    for piece in pieces
                ]
            )
            encoded = model.encode(features)
            results = model.model.generate(
                encoded,
                [prompt] * len(batch),
                beam_size=options.beam_size,
                patience=options.patience,
                length_penalty=options.length_penalty,
                max_length=model.max_length,
                suppress_blank=options.suppress_blank,
                suppress_tokens=options.suppress_tokens,
                no_repeat_ngram_size=options.no_repeat_ngram_size,
                repetition_penalty=options.repetition_penalty,
                return_scores=True,
            )
            tokens = [[t for t in result.sequences_ids[0] if t < tokenizer.eot] for result in results]
            texts = tokenizer.tokenizer.decode_batch(tokens)
            timings: list[list[dict[str, Any]]] = [[] for _ in batch]
            if with_words:
                # One mel frame (HOP_LENGTH samples) is the unit of the decoder's word alignment.
                frames = [len(piece) // HOP_LENGTH for piece in pieces]
                timings = model.find_alignment(tokenizer, tokens, encoded, frames)
                for alignment in timings:
                    merge_punctuations(alignment, options.prepend_punctuations, options.append_punctuations)
            for chunk, result, text, timing in zip(batch, results, texts, timings, strict=True):
                length = len(result.sequences_ids[0])
                logprob = result.scores[0] * (length**options.length_penalty) / (length + 1)
                offset = chunk["start"]
                words = [
                    Word(
                        word=w["word"].strip(),
                        start=round(offset + w["start"], 3),
                        end=round(offset + w["end"], 3),
                        score=round(float(w["probability"]), 4),
                    )
                    for w in timing
                    if w["word"].strip()
                ]
                yield Segment(
                    start=round(chunk["start"], 3),
                    end=round(chunk["end"], 3),
                    text=text.strip(),
                    words=words or None,
                    avg_logprob=float(logprob),
                    language=tokenizer.language_code,
                )

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
        if path is None or language is None:
            return None
        if language not in self._aligners:
            import whisperx

            try:
                self._aligners[language] = whisperx.load_align_model(
                    language, self.device, model_name=str(path), model_cache_only=True
                )
            except Exception as error:
                raise ModelUnavailable(
                    f"the {language!r} alignment model at {path} could not be loaded ({error}); "
                    "fix or remove it in ALIGNMENT_MODELS"
                ) from error
        return self._aligners[language]

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
