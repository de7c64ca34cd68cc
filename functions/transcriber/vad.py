"""Speech regions: Silero VAD v6 (the ONNX file faster-whisper ships), run block by block so an
hour of audio costs a few MB beyond the audio itself.

Two users: language identification (functions/transcriber/language.py) listens to these regions only, and
belle2 decodes them. BELLE-2 was fine-tuned without timestamp tokens, so its segments' times
come from here: each region is decoded on its own and becomes one segment spanning the speech
the VAD heard.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from functions.transcriber.schema import SAMPLE_RATE

WINDOW = 512  # samples per Silero probability (32 ms)
CONTEXT = 64  # samples of the previous window the v6 model reads with each window
BLOCK_WINDOWS = 4096  # windows per ONNX call (~2 min of audio)


@dataclass(frozen=True)
class Region:
    """A stretch of audio, in 16 kHz samples (end exclusive)."""

    start: int  # sample offsets into the decoded audio
    end: int

    @property
    def seconds(self) -> float:
        return (self.end - self.start) / SAMPLE_RATE


@dataclass(frozen=True)
class VadOptions:
    """How window probabilities become regions (probabilities in [0, 1], times in seconds)."""

    threshold: float = 0.5  # speech starts at this probability ...
    neg_threshold: float = 0.35  # ... and may end below this one
    min_speech_s: float = 0.25  # shorter bursts (clicks, coughs) are dropped
    min_silence_s: float = 0.5  # a pause this long ends a region: phrase-sized segments
    pad_s: float = 0.2  # kept either side so the first and last syllables are not clipped
    max_region_s: float = 30.0  # Whisper's window: a region never exceeds it
    merge_gap_s: float = 0.3  # neighbours closer than this after padding are one phrase
    merge_under_s: float = 8.0  # short phrases join a neighbour while the sum stays under this ...
    merge_pause_s: float = 1.0  # ... and the pause between them is shorter than this


def silero_model_path() -> Path:
    """faster-whisper's bundled asset, found without importing faster-whisper (and CTranslate2)."""
    spec = importlib.util.find_spec("faster_whisper")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("faster-whisper is not installed: it ships the Silero VAD model")
    path = Path(next(iter(spec.submodule_search_locations))) / "assets" / "silero_vad_v6.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing")
    return path


class SpeechDetector:
    """Silero VAD v6 on onnxruntime (one CPU thread), for 16 kHz mono float32 audio: speech
    probabilities per 512-sample window and the speech regions planned from them."""

    def __init__(self, path: Path | None = None, options: VadOptions | None = None) -> None:
        import onnxruntime

        session_options = onnxruntime.SessionOptions()
        # The VAD is cheap next to the model: one thread leaves the cores to the decoder.
        session_options.intra_op_num_threads = 1
        session_options.inter_op_num_threads = 1
        session_options.log_severity_level = 4
        self.session = onnxruntime.InferenceSession(
            str(path or silero_model_path()), providers=["CPUExecutionProvider"], sess_options=session_options
        )
        self.options = options or VadOptions()

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        """Speech probability per 512-sample window, the LSTM state carried across blocks."""
        state_h = np.zeros((1, 1, 128), np.float32)
        state_c = np.zeros((1, 1, 128), np.float32)
        context = np.zeros(CONTEXT, np.float32)
        count = -(-len(audio) // WINDOW)
        out = np.empty(count, np.float32)
        block = WINDOW * BLOCK_WINDOWS
        for first in range(0, count, BLOCK_WINDOWS):
            chunk = audio[first * WINDOW : first * WINDOW + block]
            if len(chunk) % WINDOW:
                chunk = np.pad(chunk, (0, WINDOW - len(chunk) % WINDOW))
            windows = chunk.reshape(-1, WINDOW)
            previous = np.vstack([context, windows[:-1, -CONTEXT:]])
            batch = np.ascontiguousarray(np.hstack([previous, windows]), np.float32)
            probs, state_h, state_c = self.session.run(None, {"input": batch, "h": state_h, "c": state_c})
            out[first : first + len(windows)] = np.asarray(probs).reshape(-1)
            context = windows[-1, -CONTEXT:].copy()
        return out

    def regions(self, audio: np.ndarray) -> list[Region]:
        """The speech regions of `audio` (float32, shape (samples,), 16 kHz mono), in time order."""
        return plan_regions(self.probabilities(audio), len(audio), self.options)


def plan_regions(probs: np.ndarray, samples: int, options: VadOptions) -> list[Region]:
    """Speech regions from window probabilities: hysteresis, minimum lengths, padding, merging."""
    o = options
    to_windows = SAMPLE_RATE / WINDOW
    min_silence = round(o.min_silence_s * to_windows)
    pad = round(o.pad_s * SAMPLE_RATE)
    limit = int((o.max_region_s - 2 * o.pad_s) * to_windows)
    spans: list[tuple[int, int]] = []  # in windows
    start: int | None = None
    quiet_from: int | None = None  # where the current pause began, if in one
    best_cut: int | None = None  # the middle of the span's latest pause: where to cut at the limit
    for i, p in enumerate(probs):
        if start is None:
            if p >= o.threshold:
                start, quiet_from, best_cut = i, None, None
            continue
        if p >= o.threshold:
            if quiet_from is not None:
                best_cut = (quiet_from + i) // 2
            quiet_from = None
        elif p < o.neg_threshold and quiet_from is None:
            quiet_from = i
        if quiet_from is not None and i - quiet_from >= min_silence:
            spans.append((start, quiet_from))
            start = None
        elif i - start >= limit:  # too long for one window: cut at the last pause, else here
            cut = best_cut if best_cut is not None and best_cut > start else i
            spans.append((start, cut))
            start, quiet_from, best_cut = cut, None, None
    if start is not None:
        spans.append((start, quiet_from if quiet_from is not None else len(probs)))

    min_speech = o.min_speech_s * to_windows
    regions = [
        Region(max(0, a * WINDOW - pad), min(samples, b * WINDOW + pad))
        for a, b in spans
        if b - a >= min_speech
    ]
    merged: list[Region] = []
    max_samples = int(o.max_region_s * SAMPLE_RATE)
    for region in regions:
        if merged and region.start < merged[-1].end:
            # Two halves of a span cut at the limit: their padding overlaps. Meet at the cut, so
            # no stretch of audio is decoded twice and the segment times do not overlap.
            middle = (merged[-1].end + region.start) // 2
            merged[-1] = Region(merged[-1].start, middle)
            region = Region(middle, region.end)
        if merged:
            last = merged[-1]
            span = region.end - last.start
            gap = (region.start - last.end) / SAMPLE_RATE
            short = span <= o.merge_under_s * SAMPLE_RATE and gap < o.merge_pause_s
            if span <= max_samples and (gap <= o.merge_gap_s or short):
                merged[-1] = Region(last.start, region.end)
                continue
        merged.append(region)
    return merged
