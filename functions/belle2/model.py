"""The BELLE-2 adapter: a local Hugging Face Whisper checkpoint (BELLE-2/Belle-whisper-large-v3-zh in
production, the whisper-base checkpoint derived at setup in the embedded stack) through
transformers, decoding VAD speech regions in batches.

BELLE-2 was fine-tuned without timestamp tokens, so its own timestamps are guesses: every segment
is one speech region from the VAD (functions/transcriber/vad.py), decoded without timestamps, and its
start and end are the region's.

Each region is decoded as openai-whisper's transcribe.py decodes a 30 s window (decode_with_fallback
and the no-speech check after it; faster-whisper does the same): beam search at temperature 0, and
a result that repeats itself or is too unlikely is decoded again by sampling at rising
temperatures. The rule is applied here, region by region, not through transformers' own
`temperature=(...)` and `*_threshold` options of generate(), which 4.57 does apply to short-form
input but not correctly for a batch: the no-speech probabilities are computed once for the whole
batch and then indexed by position in the smaller fallback batch (a re-decoded region is judged by
another region's), asking for scores fails once re-decoded results differ in length, and the
encoder runs again at every temperature.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from events.models import Decoding
from events.settings import Settings
from functions.transcriber import SAMPLE_RATE, JobFailed, ModelUnavailable, Segment, Transcript, offline
from functions.transcriber.prompt import as_prompt_text, fit_prompt
from functions.transcriber.vad import Region, SpeechDetector

NAME = "belle2"
# A Mandarin fine-tune: its language detection is not what it was trained for, so a job that
# names no language is decoded as Chinese.
DEFAULT_LANGUAGE = "zh"
# openai-whisper's transcribe() defaults, which faster-whisper keeps.
TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
COMPRESSION_RATIO_THRESHOLD = 2.4  # zlib ratio of the text's UTF-8: above it, the text repeats itself
LOGPROB_THRESHOLD = -1.0  # mean log-probability of the tokens and the end of text: below it, a guess
NO_SPEECH_THRESHOLD = 0.6  # P(<|nospeech|>) after <|startoftranscript|>: above it (and a guess), silence
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


def compression_ratio(text: str) -> float:
    """openai-whisper's measure of repetition: UTF-8 length over zlib-compressed length."""
    raw = text.encode("utf-8")
    return len(raw) / len(zlib.compress(raw))


@dataclass(frozen=True)
class Decoded:
    """One region decoded at one temperature."""

    text: str
    avg_logprob: float  # as openai-whisper: sum over the text tokens and the end token / (tokens + 1)
    no_speech_prob: (
        float  # P(<|nospeech|>) right after <|startoftranscript|>: the region's, whatever the pass
    )
    temperature: float

    @property
    def compression_ratio(self) -> float:
        return compression_ratio(self.text)


CONTEXT_S = 0.5  # silence heard either side of a region, as Whisper heard it in training


def with_context(regions: Sequence[Region], samples: int) -> list[Region]:
    """Each region widened by up to CONTEXT_S either side, for the decoder's ears only (the
    segment keeps the region's times), never past the middle of the pause to its neighbour, so no
    word is heard twice. A region cut tight at its first syllable loses it: on
    ../shared/audio/dev/zh_funasr_asr_example.wav 0.2 s of padding gave 3 wrong characters, 0.5 s
    none (tests/benchmarks/quality_bench.py)."""
    context = int(CONTEXT_S * SAMPLE_RATE)
    widened = []
    for i, region in enumerate(regions):
        before = region.start if i == 0 else (region.start - regions[i - 1].end) // 2
        after = samples - region.end if i + 1 == len(regions) else (regions[i + 1].start - region.end) // 2
        start, end = region.start - min(context, max(before, 0)), region.end + min(context, max(after, 0))
        widened.append(Region(start, end))
    return widened


def _batches(regions: Sequence[Region], size: int) -> Iterator[list[Region]]:
    it = iter(regions)
    while batch := list(islice(it, max(size, 1))):
        yield batch


class Belle2:
    name = NAME
    # A job that names no language and is not routed by language detection is decoded as this
    # (typed as ModelAdapter declares it: None there means "detect it").
    default_language: str | None = DEFAULT_LANGUAGE
    # One short inference before ready (the skeleton's `warm_up`, MODEL_WARMUP).
    warms_up = True
    # The fallback rule (openai-whisper's transcribe.py); instance attributes may override them.
    temperatures: tuple[float, ...] = TEMPERATURES
    compression_ratio_threshold: float = COMPRESSION_RATIO_THRESHOLD
    logprob_threshold: float = LOGPROB_THRESHOLD
    no_speech_threshold: float = NO_SPEECH_THRESHOLD

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.model_dir: Path = settings.belle2_model_path()
        self.model: Any = None
        self.processor: Any = None
        self.detector: SpeechDetector | None = None
        self.device = "cpu"
        self.dtype: Any = None
        self.languages: set[str] = set()
        self.language_ids: dict[str, int] = {}  # "zh" -> id of <|zh|>
        self.no_speech_id = -1

    def load(self) -> None:
        check_model_dir(self.model_dir)
        offline()  # before transformers (and huggingface_hub) are imported: they read it then
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
        generation_config = self.model.generation_config
        lang_to_id = getattr(generation_config, "lang_to_id", None) or {}
        self.language_ids = {token.strip("<|>"): int(i) for token, i in lang_to_id.items()}
        self.languages = set(self.language_ids)
        # <|nospeech|> (<|nocaptions|> before large-v3) sits just before <|notimestamps|>.
        vocab = self.processor.tokenizer.get_vocab()
        no_speech = [vocab[token] for token in ("<|nospeech|>", "<|nocaptions|>") if token in vocab]
        self.no_speech_id = no_speech[0] if no_speech else int(generation_config.no_timestamps_token_id) - 1
        self.detector = SpeechDetector()

    def transcribe(
        self,
        audio: np.ndarray,
        language: str | None,
        on_segment: Callable[[Segment], None],
        on_progress: Callable[[float], None],
        *,
        decoding: Decoding | None = None,
    ) -> Transcript:
        """One window (16 kHz mono float32) in `language` (None: Mandarin), region by region, as
        `decoding` asks (README.md): its prompt and hotwords as previous text, its temperature as
        the first of the fallback schedule. JobFailed `media_zero_duration`,
        `language_unsupported`, `task_unsupported` (belle2 only transcribes: routing never sends
        it a job to translate, events/registry.py TASKS)."""
        assert self.detector is not None, "load() first"
        decoding = decoding or Decoding()
        if decoding.task != "transcribe":
            raise JobFailed("task_unsupported", f"{self.name} only transcribes; it cannot {decoding.task}")
        if len(audio) == 0:
            raise JobFailed("media_zero_duration", "the audio track lasts 0 s")
        language = (language or self.default_language or DEFAULT_LANGUAGE).lower().split("-")[0]
        if language not in self.languages:
            raise JobFailed("language_unsupported", f"{self.name} cannot transcribe language {language!r}")
        transcript = Transcript(language=language)
        regions = self.detector.regions(audio)
        if not regions:  # silence, music: nothing to decode, and nothing for the model to invent
            on_progress(1.0)
            return transcript
        size = self.settings.batch_size
        heard = with_context(regions, len(audio))
        prompt = self.prompt_ids(decoding)
        temperatures = self.temperatures
        if decoding.temperature is not None:
            first = decoding.temperature
            temperatures = (first, *(t for t in self.temperatures if t > first))
        for batch, context in zip(_batches(regions, size), _batches(heard, size), strict=True):
            decoded = self.decode(audio, context, language, prompt, temperatures)
            for region, (text, avg_logprob) in zip(batch, decoded, strict=True):
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

    def detect_language(self, audio: np.ndarray) -> dict[str, float]:
        """Probability of each language the checkpoint knows ("zh", "en", ...), summing to 1, for
        16 kHz mono float32 audio; only its first 30 s (one Whisper window) are heard.

        One forward pass: the decoder's first step after <|startoftranscript|>, softmax over the
        language tokens only; what `WhisperForConditionalGeneration.detect_language` and
        openai-whisper's detect_language compute before taking the argmax. Silence gets a
        distribution like any other input: what to make of it is the caller's decision.
        """
        import torch

        assert self.model is not None, "load() first"
        clip = np.asarray(audio[: 30 * SAMPLE_RATE], dtype=np.float32)
        features = self.processor.feature_extractor(
            clip, sampling_rate=SAMPLE_RATE, return_tensors="pt"
        ).input_features.to(self.device, self.dtype)
        with torch.inference_mode():
            logits = self._first_step_logits(self.model.get_encoder()(features).last_hidden_state)[0]
        codes = list(self.language_ids)
        probs = logits[[self.language_ids[code] for code in codes]].float().softmax(dim=-1)
        return {code: float(p) for code, p in zip(codes, probs.tolist(), strict=True)}

    def prompt_ids(self, decoding: Decoding) -> list[int]:
        """The previous-text tokens of a job: `<|startofprev|>`, the hotwords, then the prompt,
        each encoded as `processor.get_prompt_ids` encodes text (a leading space), together at
        most Whisper's 223 tokens (the prompt losing its oldest, as openai-whisper's:
        functions/transcriber/prompt.py); [] when the job has neither. Hotwords are previous text
        here, where faster-whisper puts them too: transformers has no option of their own."""
        texts = [as_prompt_text(decoding.hotwords), as_prompt_text(decoding.prompt)]
        tokenizer = self.processor.tokenizer
        hot, prompt = (tokenizer.encode(t, add_special_tokens=False) if t else [] for t in texts)
        hot, prompt = fit_prompt(hot, prompt)
        if not hot and not prompt:
            return []
        return [tokenizer.convert_tokens_to_ids("<|startofprev|>"), *hot, *prompt]

    def decode(
        self,
        audio: np.ndarray,
        regions: list[Region],
        language: str,
        prompt: Sequence[int] = (),
        temperatures: Sequence[float] | None = None,
    ) -> list[tuple[str, float]]:
        """Text and mean token log-probability of each region; "" for a region judged silent.
        `prompt`: previous-text token ids (`prompt_ids`) every pass is conditioned on;
        `temperatures`: the fallback schedule (default: openai-whisper's, from 0).

        The regions are encoded and decoded as one batch with beam search (`settings.beam_size`
        beams; 1 is greedy) at the first temperature (sampling above 0). Then, region by region,
        openai-whisper's rule (transcribe.py: decode_with_fallback and the no-speech check after
        it):

        - a result whose text compresses too well (zlib ratio > 2.4: it repeats itself) or whose
          mean log-probability is below -1.0 is refused, and the region is decoded again, alone
          and from its encoder output, by sampling at the next of 0.2, 0.4 ... 1.0;
        - a result below -1.0 from a region whose P(<|nospeech|>) after <|startoftranscript|>
          exceeds 0.6 is silence: no fallback, and the region gives empty text;
        - when every temperature is refused, the result with the best mean log-probability among
          those that do not repeat themselves is kept (faster-whisper's choice; openai-whisper
          keeps the last).
        """
        import torch

        clips = [audio[region.start : region.end] for region in regions]
        features = self.processor.feature_extractor(
            clips, sampling_rate=SAMPLE_RATE, return_tensors="pt"
        ).input_features.to(self.device, self.dtype)
        results = []
        schedule = tuple(temperatures) if temperatures else self.temperatures
        with torch.inference_mode():
            encoded = self.model.get_encoder()(features).last_hidden_state
            for i, first in enumerate(self._generate(encoded, language, schedule[0], prompt)):
                chosen = self._fallback(encoded[i : i + 1], language, first, prompt, schedule)
                results.append(("" if self._silent(chosen) else chosen.text, chosen.avg_logprob))
        return results

    def _refused(self, result: Decoded) -> bool:
        return (
            result.compression_ratio > self.compression_ratio_threshold
            or result.avg_logprob < self.logprob_threshold
        )

    def _silent(self, result: Decoded) -> bool:
        return (
            result.no_speech_prob > self.no_speech_threshold and result.avg_logprob < self.logprob_threshold
        )

    def _fallback(
        self, encoded: Any, language: str, first: Decoded, prompt: Sequence[int], schedule: Sequence[float]
    ) -> Decoded:
        """The accepted result of one region, decoding it again at higher temperatures as needed."""
        result, tried = first, [first]
        for temperature in schedule[1:]:
            if not self._refused(result) or self._silent(result):
                return result
            result = self._generate(encoded, language, temperature, prompt)[0]
            tried.append(result)
        if not self._refused(result) or self._silent(result):
            return result
        repeating = self.compression_ratio_threshold
        candidates = [r for r in tried if r.compression_ratio <= repeating] or tried
        return max(candidates, key=lambda r: r.avg_logprob)

    def _first_step_logits(self, encoded: Any) -> Any:
        """Decoder logits right after <|startoftranscript|>, one row per encoded clip: where Whisper
        reads the language and the no-speech probability."""
        import torch

        start = torch.full(
            (encoded.shape[0], 1), self.model.generation_config.decoder_start_token_id, device=encoded.device
        )
        hidden = self.model.get_decoder()(
            input_ids=start, encoder_hidden_states=encoded, use_cache=False
        ).last_hidden_state
        return self.model.get_output_embeddings()(hidden[:, -1])

    def _generate(
        self, encoded: Any, language: str, temperature: float, prompt: Sequence[int] = ()
    ) -> list[Decoded]:
        """Decode encoder outputs without timestamps, after the previous-text tokens `prompt`
        (transformers' `prompt_ids`): beam search at temperature 0, sampling from the whole
        distribution (no top-k) above it; then score what was decoded."""
        import torch
        from transformers.modeling_outputs import BaseModelOutput

        options: dict[str, Any] = {"temperature": temperature, "num_beams": self.settings.beam_size}
        if temperature > 0:
            options.update(do_sample=True, top_k=0, num_beams=1)
        if prompt:
            options["prompt_ids"] = torch.tensor(list(prompt), device=encoded.device)
        out = self.model.generate(
            # a new wrapper each time: generate() swaps in the tensor repeated for the beams
            encoder_outputs=BaseModelOutput(last_hidden_state=encoded),
            language=language,
            task="transcribe",
            return_timestamps=False,
            return_dict_in_generate=True,  # the sequences with their prompt and end token
            **options,
        )
        # generate() returns the sequences whole: the previous text, then the start tokens.
        expected = [*prompt, *self._prompt(language)]
        start = len(prompt)  # where <|startoftranscript|> is
        prompt_length = len(expected)
        eos = self.model.generation_config.eos_token_id
        rows = []
        for sequence in out.sequences.tolist():
            if sequence[:prompt_length] != expected:  # the text would be cut in the wrong place
                raise RuntimeError(f"generate() started from {sequence[:prompt_length]}, not {expected}")
            generated = sequence[prompt_length:]
            end = generated.index(eos) + 1 if eos in generated else len(generated)  # then padding
            rows.append(sequence[: prompt_length + end])
        tokenizer = self.processor.tokenizer
        scores = self._score(encoded, rows, prompt_length, start)
        return [
            Decoded(
                tokenizer.decode(row[prompt_length:], skip_special_tokens=True).strip(),
                avg,
                no_speech,
                temperature,
            )
            for row, (no_speech, avg) in zip(rows, scores, strict=True)
        ]

    def _prompt(self, language: str) -> list[int]:
        """<|startoftranscript|><|language|><|transcribe|><|notimestamps|>: what generate() starts from."""
        config = self.model.generation_config
        return [
            config.decoder_start_token_id,
            self.language_ids[language],
            config.task_to_id["transcribe"],
            config.no_timestamps_token_id,
        ]

    def _score(
        self, encoded: Any, rows: list[list[int]], prompt: int, start: int = 0
    ) -> list[tuple[float, float]]:
        """P(<|nospeech|>) and openai-whisper's avg_logprob of each decoded row (previous text and
        start tokens: the first `prompt` tokens, <|startoftranscript|> at `start`; then text
        tokens, end token if one came), by teacher forcing: one decoder pass over the rows.

        Scoring after the fact rather than asking generate() for its scores keeps beam search from
        storing a vocabulary-wide row per beam and step (4 MB a step for 4 regions x 5 beams). The
        log-probabilities are the model's at temperature 1 (openai-whisper's too, whatever the
        sampling temperature); the end token counts, and the length is text tokens + 1.
        """
        import torch

        eos = self.model.generation_config.eos_token_id
        ids = torch.full((len(rows), max(map(len, rows))), eos, dtype=torch.long, device=encoded.device)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, device=encoded.device)
        hidden = self.model.get_decoder()(
            input_ids=ids, encoder_hidden_states=encoded, use_cache=False
        ).last_hidden_state
        project = self.model.get_output_embeddings()
        scores = []
        for i, row in enumerate(rows):
            # position j predicts token j + 1; one row at a time bounds the vocabulary-wide matrix
            logprobs = project(hidden[i, : len(row) - 1]).float().log_softmax(dim=-1)
            no_speech = float(logprobs[start, self.no_speech_id].exp())  # right after <|startoftranscript|>
            targets = torch.tensor(row[prompt:], device=encoded.device).unsqueeze(-1)
            total = float(logprobs[prompt - 1 :].gather(-1, targets).sum())
            text_tokens = len(row) - prompt - (1 if row[-1] == eos and len(row) > prompt else 0)
            scores.append((no_speech, total / (text_tokens + 1)))
        return scores
