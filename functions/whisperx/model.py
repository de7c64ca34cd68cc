"""The WhisperX adapter: a local CTranslate2 model through `whisperx.load_model`, batched, with
the pyannote VAD bundled in the whisperx wheel (its "silero" option downloads at run time, so it
is never used here), wav2vec2 forced alignment where a local model is configured, and, for a job
that asks for speakers, the diarization stage (functions/whisperx/diarization.py).

`FasterWhisperPipeline.transcribe` returns only when every VAD chunk is done and keeps the
language probability to itself; the loop below is the same pipeline, yielding each segment as
its batch comes out of the model.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from events.models import Decoding, Diarization, Word
from events.settings import Settings
from functions.transcriber import (
    SAMPLE_RATE,
    JobFailed,
    ModelUnavailable,
    Segment,
    SpeakerAttribution,
    Transcript,
    offline,
)
from functions.transcriber.prompt import as_prompt_text, fit_prompt
from functions.whisperx.diarization import Diarizer, attribution, load_diarizer

NAME = "whisperx"
# Passes over one chunk at most: the first, then its untranscribed rests (each must move on).
_MAX_PASSES = 4
# Untranscribed speech shorter than this at a chunk's end is not worth another pass.
_REST_MIN_S = 1.0
CT2_FILES = ("model.bin", "config.json", "tokenizer.json")


class WhisperX:
    name = NAME
    default_language: str | None = None  # multilingual: a job that names no language is listened to first
    # One short inference before ready (the skeleton's `warm_up`, MODEL_WARMUP).
    warms_up = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.model_dir: Path = settings.whisperx_model_path()
        self.device = settings.resolved_device()
        self.pipeline: Any = None
        self._aligners: dict[str, tuple[Any, dict[str, Any]]] = {}
        self._diarizer: Diarizer | None = None

    def load(self) -> None:
        missing = [name for name in CT2_FILES if not (self.model_dir / name).is_file()]
        if missing:
            raise ModelUnavailable(
                f"whisperx model directory {self.model_dir} lacks {', '.join(missing)}; "
                "run `klipnote setup` or set WHISPERX_MODEL_DIR to a CTranslate2 model"
            )
        # whisperx's aligner reads NLTK's punkt_tab; it must come from disk, never a download.
        os.environ.setdefault("NLTK_DATA", str(self.settings.nltk_data_path()))
        # pyannote.audio, the VAD's library, sends usage spans to otel.pyannote.ai on every model
        # load and VAD run unless told not to (pyannote/audio/telemetry/metrics.py reads this at
        # each span): a self-hosted worker reaches no host of a library's vendor.
        os.environ["PYANNOTE_METRICS_ENABLED"] = "false"
        offline()  # before whisperx imports huggingface_hub and transformers, which read it then
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
            asr_options={"beam_size": self.settings.beam_size},
        )
        # Configured aligners load now: a wrong path fails readiness, not the first job in that language.
        for language in self.settings.alignment_models:
            self._aligner(language)
        # A configured pyannote pipeline too; the embedded voice encoder loads with the first job
        # that asks for speakers, so a worker whose jobs never do pays nothing for it.
        if self.settings.diarization_model_dir is not None:
            self._diarizer = load_diarizer(self.settings)

    # -- speakers -----------------------------------------------------------------------------

    def diarize(self, audio: np.ndarray, diarization: Diarization) -> SpeakerAttribution:
        """Who speaks when in the whole file (16 kHz mono float32, shape (samples,)), by the
        diarization stage (functions/whisperx/diarization.py), and how each segment is then
        attributed: after alignment, so by its words' times. ModelUnavailable when the
        diarization model cannot be loaded."""
        if self._diarizer is None:
            self._diarizer = load_diarizer(self.settings)
        return attribution(self._diarizer.diarize(audio, diarization))

    # -- transcription ------------------------------------------------------------------------

    def transcribe(
        self,
        audio: np.ndarray,
        language: str | None,
        on_segment: Callable[[Segment], None],
        on_progress: Callable[[float], None],
        *,
        decoding: Decoding | None = None,
    ) -> Transcript:
        """One window (16 kHz mono float32) in `language` (None: detected from this window),
        decoded as `decoding` asks (README.md: task, prompt, hotwords, temperature). With
        task=translate the segments are English (`language` "en", aligned by the English aligner
        when one is configured) and the transcript's language stays the one spoken. JobFailed
        `language_unsupported`, `task_unsupported` (an English-only checkpoint cannot translate)."""
        from faster_whisper.tokenizer import _LANGUAGE_CODES, Tokenizer
        from whisperx.audio import CHUNK_LENGTH
        from whisperx.vads import Pyannote

        if language is not None and language not in _LANGUAGE_CODES:
            raise JobFailed("language_unsupported", f"whisperx cannot transcribe language {language!r}")
        pipeline = self.pipeline
        transcript = Transcript(language=language)
        if language is None:  # called without the skeleton's identification: this window's
            probabilities = self.detect_language(audio)
            language = max(probabilities, key=probabilities.__getitem__)
            transcript.language, transcript.language_probability = language, probabilities[language]
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
        decoding = decoding or Decoding()
        if decoding.task == "translate" and not multilingual:
            raise JobFailed("task_unsupported", "an English-only Whisper checkpoint cannot translate")
        tokenizer = Tokenizer(model.hf_tokenizer, multilingual, task=decoding.task, language=language)
        # Translated text is English: the English aligner (when configured) times its words, and
        # the subtitle rules (functions/optimize) read the segments' language.
        written = "en" if decoding.task == "translate" else language
        aligner = self._aligner(written)
        skipped = f"skipped: no alignment model for {written!r}; word times from the decoder"
        transcript.alignment = "wav2vec2" if aligner else skipped
        options = self._options(decoding, tokenizer, with_words=aligner is None)
        for index, segments in self._decode(audio, chunks, tokenizer, options):
            for segment in segments:
                segment.language = written
                for part in self._align(segment, audio, aligner) if aligner else [segment]:
                    transcript.segments.append(part)
                    on_segment(part)
            on_progress((index + 1) / len(chunks))
        return transcript

    def _options(self, decoding: Decoding, tokenizer: Any, *, with_words: bool) -> Any:
        """faster-whisper's TranscriptionOptions for one job: the pipeline's, fixed at load, with
        the job's prompt, hotwords and temperatures replaced in a copy (`dataclasses.replace`,
        as whisperx's own `FasterWhisperPipeline.transcribe` does), so no job's options outlive
        it. The file's language is forced (multilingual=False: no detection per chunk).

        The prompt and hotwords share Whisper's 223-token budget (functions/transcriber/prompt.py):
        cut here, as token ids decoded back to text, because the batched pipeline takes the
        prompt only as text. A temperature starts the fallback schedule there (0.2 steps, up to
        1.0, as openai-whisper's)."""
        hotwords, prompt = as_prompt_text(decoding.hotwords), as_prompt_text(decoding.prompt)
        hot_ids, prompt_ids = fit_prompt(
            tokenizer.encode(hotwords) if hotwords else [], tokenizer.encode(prompt) if prompt else []
        )
        temperatures = list(self.pipeline.options.temperatures)
        if decoding.temperature is not None:
            temperatures = [decoding.temperature, *(t for t in temperatures if t > decoding.temperature)]
        return dataclasses.replace(
            self.pipeline.options,
            without_timestamps=False,
            word_timestamps=with_words,
            multilingual=False,
            initial_prompt=tokenizer.decode(prompt_ids) if prompt_ids else None,
            hotwords=tokenizer.decode(hot_ids).strip() if hot_ids else None,
            temperatures=temperatures,
        )

    def _decode(
        self, audio: np.ndarray, chunks: list[dict[str, Any]], tokenizer: Any, options: Any
    ) -> Iterator[tuple[int, list[Segment]]]:
        """Each VAD chunk's index and its segments, in order, decoded in batches by faster-whisper's
        own `BatchedInferencePipeline.forward` with timestamp tokens, so a chunk comes back as the
        sentences Whisper timed inside it. Without a wav2vec2 aligner, word times come from the
        decoder's cross-attention (`word_timestamps`).

        Whisper may still end a chunk early and drop the rest of its speech (whisperx's batched
        pipeline returned 8.6 s of a 15.5 s recording, case 14 of ../shared/cases): as Whisper's own
        sequential decoding seeks to its last timestamp, the untranscribed rest of a chunk that
        still holds speech is decoded again, until a pass adds nothing.

        Batched decoding has no temperature fallback: a chunk whose result Whisper's own rules
        refuse (openai-whisper's transcribe.py: zlib compression ratio over 2.4, a decoding loop,
        or mean log-probability under -1.0, unless the chunk is silence) is decoded again by
        faster-whisper's sequential `WhisperModel.transcribe`, which falls back to sampling at
        rising temperatures.

        A job asking for a temperature above 0 is decoded sequentially throughout: the batched
        pass cannot sample (it sets no `sampling_topk`, so CTranslate2 decodes greedily whatever
        the temperature)."""
        from faster_whisper.transcribe import BatchedInferencePipeline

        if options.temperatures[0] > 0:
            for index, chunk in enumerate(chunks):
                yield index, self._sequential(audio, chunk, tokenizer, options)
            return
        batched = BatchedInferencePipeline(self.pipeline.model)
        size = max(self.settings.batch_size, 1)
        for first in range(0, len(chunks), size):
            found: list[list[Segment]] = [[] for _ in chunks[first : first + size]]
            pending = list(enumerate(chunks[first : first + size]))
            for _ in range(_MAX_PASSES):
                if not pending:
                    break
                decoded = self._forward(audio, [chunk for _, chunk in pending], tokenizer, options, batched)
                rests = []
                for (slot, chunk), segments in zip(pending, decoded, strict=True):
                    if self._refused(segments, options):
                        found[slot].extend(self._sequential(audio, chunk, tokenizer, options))
                        continue
                    found[slot].extend(segments)
                    if segments and (rest := _untranscribed(chunk, segments[-1].end)) is not None:
                        rests.append((slot, rest))
                pending = rests
            for slot, segments in enumerate(found):
                yield first + slot, segments

    @staticmethod
    def _refused(segments: list[Segment], options: Any) -> bool:
        """Whether Whisper's rules refuse one chunk's batched result (the log-probabilities are the
        chunk's, shared by its segments)."""
        from faster_whisper.transcribe import get_compression_ratio

        if not segments or segments[0].avg_logprob is None:
            return False
        logprob, no_speech = segments[0].avg_logprob, segments[0].no_speech_prob or 0.0
        if options.no_speech_threshold is not None and no_speech > options.no_speech_threshold:
            if options.log_prob_threshold is not None and logprob < options.log_prob_threshold:
                return False  # silence: optimize drops what the model made of it
        ratio = get_compression_ratio(" ".join(segment.text for segment in segments))
        too_repetitive = (
            options.compression_ratio_threshold is not None and ratio > options.compression_ratio_threshold
        )
        too_unlikely = options.log_prob_threshold is not None and logprob < options.log_prob_threshold
        return too_repetitive or too_unlikely

    def _sequential(
        self, audio: np.ndarray, chunk: dict[str, Any], tokenizer: Any, options: Any
    ) -> list[Segment]:
        """One chunk through faster-whisper's sequential decoding, with its temperature fallback
        (the job's task, prompt, hotwords and temperatures from `options`)."""
        model = self.pipeline.model
        start, end = chunk["start"], chunk["end"]
        parts, _ = model.transcribe(
            audio[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)],
            language=tokenizer.language_code,
            task=_task_of(tokenizer),
            beam_size=self.settings.beam_size,
            word_timestamps=options.word_timestamps,
            condition_on_previous_text=False,
            vad_filter=False,
            initial_prompt=options.initial_prompt,
            hotwords=options.hotwords,
            temperature=options.temperatures,
        )
        segments = []
        for part in parts:
            text = part.text.strip()
            if not text:
                continue
            words = [
                Word(
                    word=w.word.strip(),
                    start=round(start + w.start, 3),
                    end=round(start + w.end, 3),
                    score=round(w.probability, 4),
                )
                for w in part.words or []
                if w.word.strip()
            ]
            first = min(start + part.start, end)
            segments.append(
                Segment(
                    start=round(first, 3),
                    end=round(min(max(start + part.end, first), end), 3),
                    text=text,
                    words=words or None,
                    avg_logprob=part.avg_logprob,
                    no_speech_prob=part.no_speech_prob,
                    language=tokenizer.language_code,
                )
            )
        return segments

    def _forward(
        self, audio: np.ndarray, chunks: list[dict[str, Any]], tokenizer: Any, options: Any, batched: Any
    ) -> list[list[Segment]]:
        """One batch of chunks through the model: each chunk's segments (times on the whole audio)."""
        pieces = [audio[int(c["start"] * SAMPLE_RATE) : int(c["end"] * SAMPLE_RATE)] for c in chunks]
        features = self._features(pieces)
        metadata = [
            {"offset": chunk["start"], "duration": len(piece) / SAMPLE_RATE}
            for chunk, piece in zip(chunks, pieces, strict=True)
        ]
        decoded = []
        for chunk, parts in zip(chunks, batched.forward(features, tokenizer, metadata, options), strict=True):
            segments = []
            for part in parts:
                text = part["text"].strip()
                if not text:
                    continue
                words = [
                    Word(
                        word=w["word"].strip(),
                        start=round(float(w["start"]), 3),
                        end=round(float(w["end"]), 3),
                        score=round(float(w["probability"]), 4),
                    )
                    for w in part.get("words") or []
                    if w["word"].strip()
                ]
                # A sentence's times stay inside its chunk (a timestamp token may overshoot it).
                start = min(max(float(part["start"]), chunk["start"]), chunk["end"])
                end = min(max(float(part["end"]), start), chunk["end"])
                segments.append(
                    Segment(
                        start=round(start, 3),
                        end=round(end, 3),
                        text=text,
                        words=words or None,
                        avg_logprob=float(part["avg_logprob"]),
                        no_speech_prob=float(part["no_speech_prob"]),
                        language=tokenizer.language_code,
                    )
                )
            decoded.append(segments)
        return decoded

    def _features(self, pieces: list[np.ndarray]) -> np.ndarray:
        # Features as faster-whisper's batched pipeline makes them: the chunk's own log-mel, padded
        # to 30 s after. whisperx's (the audio zero-padded first) scored a little better on the
        # English dev clips but lost words on speech without pauses (case 19 of ../shared/cases:
        # both 砸自己的脚 dropped) and invented text on a 0.45 s word (case 13).
        from faster_whisper.audio import pad_or_trim

        model = self.pipeline.model
        return np.stack([pad_or_trim(model.feature_extractor(piece)[..., :-1]) for piece in pieces])

    def detect_language(self, audio: np.ndarray) -> dict[str, float]:
        """The probability of each language (ISO 639-1 code) for a clip of at most 30 s (float32,
        16 kHz mono; longer audio: its first 30 s), from the model's language tokens, with the
        features faster-whisper's `WhisperModel.detect_language` computes."""
        from faster_whisper.audio import pad_or_trim

        model = self.pipeline.model
        features = pad_or_trim(model.feature_extractor(audio[: 30 * SAMPLE_RATE]))
        ranked = model.model.detect_language(model.encode(features))[0]
        return {token[2:-2]: float(probability) for token, probability in ranked}

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


def _task_of(tokenizer: Any) -> str:
    """The task a faster-whisper Tokenizer was made for (it keeps only the task's token id)."""
    return "translate" if tokenizer.task == tokenizer.tokenizer.token_to_id("<|translate|>") else "transcribe"


def _untranscribed(chunk: dict[str, Any], transcribed_until: float) -> dict[str, Any] | None:
    """The part of a VAD chunk after `transcribed_until` (seconds) that still holds at least
    `_REST_MIN_S` of speech by its VAD regions, as a chunk of its own; None when there is none."""
    regions = [(start, end) for start, end in chunk.get("segments") or [] if end > transcribed_until]
    speech = sum(end - max(start, transcribed_until) for start, end in regions)
    if speech < _REST_MIN_S:
        return None
    start = max(transcribed_until, regions[0][0])
    return {"start": start, "end": chunk["end"], "segments": [(max(s, start), e) for s, e in regions]}
