"""The BELLE-2 adapter: a local Hugging Face Whisper checkpoint (BELLE-2/Belle-whisper-large-v3-zh in
production, the whisper-base checkpoint derived at setup in the embedded stack) through
transformers, decoding VAD speech regions in batches.

BELLE-2 was fine-tuned without timestamp tokens, so its own timestamps are guesses: every segment
is one speech region from the VAD (functions/belle2/vad.py), decoded without timestamps, and its
start and end are the region's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from events.settings import Settings
from functions.belle2.vad import Region, SpeechDetector
from functions.transcriber import SAMPLE_RATE, JobFailed, ModelUnavailable, Segment, Transcript

NAME = "belle2"
# A Mandarin fine-tune: its language detection is not what it was trained for, so a job that
# names no language is decoded as Chinese.
DEFAULT_LANGUAGE = "zh"
_PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.ckpt")


def check_model_dir(path: Path) -> None:
    """Refuse, with the fix in the message, a directory the adapter must not or cannot load."""
    hint = "run `klipnote setup` or set BELLE2_MODEL_DIR to a Hugging Face Whisper checkpoint"
    if not path.is_dir():
        raise ModelUnavailable(f"belle2 model directory {path} does not exist; {hint}")
    missing = [n for n in ("config.json", "preprocessor_config.json") if not (path / n).is_file()]
    if missing:
        raise ModelUnavailable(f"belle2 model directory {path} lacks {', '.join(missing)}; {hint}")
    if any(path.glob("*.safetensors")):
        return
    pickles = sorted(n for n in _PICKLE_WEIGHTS if (path / n).exists())
    if pickles:
        # The production image pins torch < 2.6, where torch.load runs code from the file
        # (CVE-2025-32434): weights come from safetensors only.
        raise ModelUnavailable(
            f"belle2 model directory {path} holds only pickle weights ({', '.join(pickles)}); "
            "belle2 loads safetensors only, because unpickling can execute code (CVE-2025-32434). "
            "Convert the checkpoint once in a trusted environment with model.save_pretrained("
            "safe_serialization=True), or use a repository revision that ships model.safetensors"
        )
    raise ModelUnavailable(f"belle2 model directory {path} holds no model weights; {hint}")


def _batches(regions: Sequence[Region], size: int) -> Iterator[list[Region]]:
    it = iter(regions)
    while batch := list(islice(it, max(size, 1))):
        yield batch


class Belle2:
    name = NAME

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.model_dir: Path = settings.belle2_model_path()
        self.model: Any = None
        self.processor: Any = None
        self.detector: SpeechDetector | None = None
        self.device = "cpu"
        self.dtype: Any = None
        self.languages: set[str] = set()

    def load(self) -> None:
        check_model_dir(self.model_dir)
        import torch  # heavy: only in the model process, only once
        from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor

        # Settings.resolved_device asks CTranslate2, which this image need not have: ask torch.
        wanted = self.settings.model_device
        self.device = wanted if wanted != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = torch.float16 if self.device == "cuda" else torch.float32
        if self.device == "cpu":
            torch.set_num_threads(self.settings.cpu_threads)
        self.model = AutoModelForSpeechSeq2Seq.from_pretrained(
            self.model_dir, torch_dtype=self.dtype, use_safetensors=True, local_files_only=True
        ).to(self.device)
        self.model.eval()
        self.processor = AutoProcessor.from_pretrained(self.model_dir, local_files_only=True)
        lang_to_id = getattr(self.model.generation_config, "lang_to_id", None) or {}
        self.languages = {token.strip("<|>") for token in lang_to_id}
        self.detector = SpeechDetector()

    def transcribe(
        self,
        audio: np.ndarray,
        language: str | None,
        on_segment: Callable[[Segment], None],
        on_progress: Callable[[float], None],
    ) -> Transcript:
        assert self.detector is not None, "load() first"
        if len(audio) == 0:
            raise JobFailed("media_zero_duration", "the audio track lasts 0 s")
        language = (language or DEFAULT_LANGUAGE).lower().split("-")[0]
        if language not in self.languages:
            raise JobFailed("language_unsupported", f"{self.name} cannot transcribe language {language!r}")
        transcript = Transcript(language=language)
        regions = self.detector.regions(audio)
        if not regions:  # silence, music: nothing to decode, and nothing for the model to invent
            on_progress(1.0)
            return transcript
        for batch in _batches(regions, self.settings.batch_size):
            for region, (text, avg_logprob) in zip(batch, self.decode(audio, batch, language), strict=True):
                if not text:
                    continue  # a region the model heard nothing in (breath, noise)
                segment = Segment(
                    start=region.start / SAMPLE_RATE,
                    end=region.end / SAMPLE_RATE,
                    text=text,
                    avg_logprob=avg_logprob,
                    language=language,
                )
                transcript.segments.append(segment)
                on_segment(segment)
            on_progress(batch[-1].end / len(audio))
        return transcript

    def decode(self, audio: np.ndarray, regions: list[Region], language: str) -> list[tuple[str, float]]:
        """Text and mean token log-probability of each region, decoded as one batch."""
        import torch

        clips = [audio[region.start : region.end] for region in regions]
        features = self.processor.feature_extractor(
            clips, sampling_rate=SAMPLE_RATE, return_tensors="pt"
        ).input_features.to(self.device, self.dtype)
        with torch.inference_mode():
            out = self.model.generate(
                features,
                language=language,
                task="transcribe",
                return_timestamps=False,
                return_dict_in_generate=True,
                output_scores=True,
            )
            scores = self.model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
        generated = out.sequences[:, -scores.shape[1] :]
        eos = self.model.generation_config.eos_token_id
        results = []
        for tokens, logprobs in zip(generated, scores, strict=True):
            keep = tokens != eos  # padding after the end of a shorter text
            mean = float(logprobs[keep].float().mean()) if bool(keep.any()) else 0.0
            text = self.processor.tokenizer.decode(tokens, skip_special_tokens=True).strip()
            results.append((text, mean))
        return results
