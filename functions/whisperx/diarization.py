"""Who spoke when: the diarization stage of the whisperx function, and the attribution of its
speakers to words and segments.

Two backends behind one protocol (`Diarizer`), chosen by `Settings.diarization_model_dir`:

- set: a local pyannote.audio speaker-diarization pipeline (`Pipeline.from_pretrained` on the
  directory, nothing fetched);
- unset (the embedded path): Silero VAD regions (functions/transcriber/vad.py, the VAD KlipNote
  already runs), Resemblyzer's `VoiceEncoder` (its weights ship in its wheel) embedding 1.6 s
  windows of each region, scikit-learn's agglomerative clustering on cosine distances with the
  number of speakers chosen by silhouette score, then windows merged into turns and short flips
  smoothed. functions/whisperx/README.md ("Diarization") says why and what it costs.

Speakers are `SPEAKER_00`, `SPEAKER_01`, ... numbered by first appearance in time (pyannote's
and whisperX's labels). Audio is 16 kHz mono float32 in [-1, 1), shape (samples,); times are
seconds on the audio's timeline. Importing this module imports no model library: the first
diarized job pays for them.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from events.models import Diarization, Word
from functions.transcriber.hub import offline
from functions.transcriber.schema import SAMPLE_RATE, ModelUnavailable, Segment

if TYPE_CHECKING:
    from events.settings import Settings

# Speaker counts tried when a job bounds neither (events.models.Diarization).
DEFAULT_MIN_SPEAKERS = 1
DEFAULT_MAX_SPEAKERS = 8
# Embedding windows per second: Resemblyzer's partials are 1.6 s long, so at 4 per second a
# window starts every 0.25 s and a change of speaker is placed to within about 0.125 s.
EMBED_RATE = 4.0
# Clustering and silhouette are O(n^2) in memory and time: past this many windows (12.5 min of
# speech at EMBED_RATE) the rate drops, down to Resemblyzer's least (0.625: windows still cover
# all speech), and past it again an evenly spaced subset is clustered and every window takes
# the speaker of the nearest cluster centre. 3000 windows: a 72 MB distance matrix.
MAX_WINDOWS = 3000
MIN_RATE = 0.625
# A region's last, shorter window is kept (zero-padded) when it covers at least this share of
# 1.6 s; a region shorter than 1.6 s still gets one window (Resemblyzer pads it).
MIN_COVERAGE = 0.5
# One speaker when the two top clusters of the average-linkage tree are closer than this (mean
# cosine distance between their windows). Silhouette cannot say "one" (it needs two clusters, and
# one voice's windows split into 2-5 groups score 0.35-0.55, as high as real speakers do).
# Calibrated on ../shared/audio (README, "Diarization"): one speaker's clip 0.04-0.27 (a 5 s,
# 5-window clip 0.33), two or more speakers 0.36-0.59.
ONE_SPEAKER_DISTANCE = 0.35
# A turn shorter than this between two turns of one other speaker, with no pause either side, is
# a flip of the windows straddling a change (a 1.6 s window sees both voices), not a turn.
FLIP_S = 0.5
# Resemblyzer's encoder was trained on speech normalised to this loudness.
TARGET_DBFS = -30.0


@dataclass(frozen=True)
class Turn:
    """One speaker's stretch of speech, in seconds on the audio's timeline."""

    start: float
    end: float
    speaker: str  # "SPEAKER_00", ... numbered by first appearance in time


class Diarizer(Protocol):
    """Who spoke when in some audio. `diarize` blocks (the worker runs it in a thread) and gives
    turns sorted by start, overlapping only where the backend finds overlapped speech."""

    name: str  # "resemblyzer" or "pyannote"

    def diarize(self, audio: np.ndarray, diarization: Diarization) -> list[Turn]: ...


def speaker_bounds(diarization: Diarization) -> tuple[int, int]:
    """The (min, max) number of speakers a job allows, defaults filled in."""
    low = diarization.min_speakers or DEFAULT_MIN_SPEAKERS
    high = diarization.max_speakers or max(DEFAULT_MAX_SPEAKERS, low)
    return low, max(low, high)


def load_diarizer(settings: Settings) -> Diarizer:
    """The diarizer the settings name: pyannote on `settings.diarization_model_dir` when set, else
    the embedded Resemblyzer path. Loads its model now (call it once per process, when the first
    diarized job comes). Raises ModelUnavailable, with the fix in its message, when it cannot."""
    if settings.diarization_model_dir is not None:
        return PyannoteDiarizer(settings.diarization_model_dir, settings)
    return ResemblyzerDiarizer(settings)


def _torch_threads(settings: Settings) -> str:
    """Hold torch to `cpu_threads` on CPU (as the decoder is); returns the device to run on."""
    import torch

    device = settings.resolved_device()
    if device != "cuda":
        device = "cpu"
        torch.set_num_threads(settings.cpu_threads)
    return device


class PyannoteDiarizer:
    """pyannote.audio's speaker-diarization pipeline from a local directory (its config.yaml and
    the checkpoints it names)."""

    name = "pyannote"

    def __init__(self, directory: Path, settings: Settings) -> None:
        config = directory / "config.yaml"
        if not directory.is_dir():
            raise ModelUnavailable(
                f"DIARIZATION_MODEL_DIR {directory} does not exist: point it at a local pyannote "
                "speaker-diarization pipeline (its config.yaml and checkpoints), or unset it to use "
                "the embedded Resemblyzer diarizer"
            )
        if not config.is_file():
            raise ModelUnavailable(
                f"DIARIZATION_MODEL_DIR {directory} has no config.yaml: it must hold a pyannote "
                "speaker-diarization pipeline (e.g. a downloaded pyannote/speaker-diarization-3.1 "
                "with its checkpoints), or unset it to use the embedded Resemblyzer diarizer"
            )
        # pyannote.audio reports usage to its vendor unless told not to; a worker reaches no one.
        os.environ["PYANNOTE_METRICS_ENABLED"] = "false"
        offline()  # before pyannote.audio imports huggingface_hub
        try:
            import torch
            from pyannote.audio import Pipeline

            device = _torch_threads(settings)
            pipeline = Pipeline.from_pretrained(directory)
            if pipeline is None:
                raise ValueError("Pipeline.from_pretrained returned nothing")
            pipeline.to(torch.device(device))
        except ModelUnavailable:
            raise
        except Exception as error:
            raise ModelUnavailable(
                f"cannot load the pyannote pipeline in DIARIZATION_MODEL_DIR {directory}: {error}; "
                "its config.yaml must name checkpoints present on local disk"
            ) from error
        self.pipeline = pipeline

    def diarize(self, audio: np.ndarray, diarization: Diarization) -> list[Turn]:
        import torch

        waveform = torch.from_numpy(np.ascontiguousarray(audio, np.float32)).unsqueeze(0)
        # Unset counts stay unset: the pipeline estimates the count itself, with no cap of ours.
        output = self.pipeline(
            {"waveform": waveform, "sample_rate": SAMPLE_RATE},
            min_speakers=diarization.min_speakers,
            max_speakers=diarization.max_speakers,
        )
        # pyannote.audio 4 returns a DiarizeOutput, 3.x the Annotation itself
        annotation: Any = getattr(output, "speaker_diarization", output)
        turns = [
            Turn(float(segment.start), float(segment.end), str(label))
            for segment, _, label in annotation.itertracks(yield_label=True)
        ]
        return renumber(turns)


class ResemblyzerDiarizer:
    """The embedded path: Silero VAD regions, Resemblyzer window embeddings, agglomerative
    clustering (cosine, average linkage), the speaker count by silhouette score."""

    name = "resemblyzer"

    def __init__(self, settings: Settings) -> None:
        try:
            from resemblyzer import VoiceEncoder

            from functions.transcriber.vad import SpeechDetector, VadOptions

            device = _torch_threads(settings)
            self.encoder = VoiceEncoder(device=device, verbose=False)
            # Regions for embedding, not for Whisper: cut at every pause of 0.3 s (a change of
            # speaker is usually at a pause), never merged into phrases, and padded little so a
            # region holds one speaker's voice as far as possible.
            self.vad = SpeechDetector(
                options=VadOptions(
                    min_silence_s=0.3,
                    pad_s=0.1,
                    merge_gap_s=0.0,
                    merge_under_s=0.0,
                    merge_pause_s=0.0,
                    max_region_s=60.0,  # bounds one encoder batch (240 windows)
                )
            )
        except Exception as error:
            raise ModelUnavailable(
                f"cannot load the embedded diarizer (Resemblyzer's voice encoder, Silero VAD): {error}; "
                "install resemblyzer and faster-whisper, or set DIARIZATION_MODEL_DIR to a pyannote pipeline"
            ) from error
        # One job at a time per worker, but keep the encoder safe if two threads ever share it.
        self._lock = threading.Lock()

    def embed(self, audio: np.ndarray) -> tuple[np.ndarray, list[tuple[float, float, float]]]:
        """Speaker embeddings (n, 256), L2-normed, of 1.6 s windows over the speech, and per
        window (region start, region end, window centre) in seconds."""
        from resemblyzer.audio import normalize_volume

        embeddings: list[np.ndarray] = []
        places: list[tuple[float, float, float]] = []
        regions = self.vad.regions(audio)
        speech_s = sum(region.seconds for region in regions)
        rate = min(EMBED_RATE, max(MIN_RATE, MAX_WINDOWS / max(speech_s, 1.0)))
        for region in regions:
            speech = normalize_volume(audio[region.start : region.end], TARGET_DBFS)
            _, partials, slices = self.encoder.embed_utterance(
                speech, return_partials=True, rate=rate, min_coverage=MIN_COVERAGE
            )
            start, end = region.start / SAMPLE_RATE, region.end / SAMPLE_RATE
            for partial, window in zip(partials, slices, strict=True):
                centre = start + (window.start + min(window.stop, len(speech))) / 2 / SAMPLE_RATE
                embeddings.append(partial)
                places.append((start, end, min(centre, end)))
        if not embeddings:
            return np.zeros((0, 256), np.float32), []
        return np.vstack(embeddings), places

    def diarize(self, audio: np.ndarray, diarization: Diarization) -> list[Turn]:
        with self._lock:
            embeddings, places = self.embed(audio)
        if not places:
            return []
        labels = cluster_many(embeddings, *speaker_bounds(diarization))
        return renumber(smooth(window_turns(places, labels)))


def cluster_many(embeddings: np.ndarray, low: int, high: int) -> np.ndarray:
    """`cluster` on at most MAX_WINDOWS embeddings: beyond, an evenly spaced subset is clustered
    and every embedding takes the label of the nearest cluster centre (cosine)."""
    if len(embeddings) <= MAX_WINDOWS:
        return cluster(embeddings, low, high)
    subset = np.linspace(0, len(embeddings) - 1, MAX_WINDOWS).round().astype(int)
    labels = cluster(embeddings[subset], low, high)
    centres = np.stack([embeddings[subset][labels == k].mean(axis=0) for k in np.unique(labels)])
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    return np.asarray(np.unique(labels)[np.argmax(embeddings @ centres.T, axis=1)])


def cluster(embeddings: np.ndarray, low: int, high: int) -> np.ndarray:
    """A speaker index per embedding (shape (n,)) from agglomerative clustering on cosine
    distances, average linkage. One speaker when the job allows one and the last merge of the
    tree (the mean cosine distance between its two top clusters) is under ONE_SPEAKER_DISTANCE;
    otherwise the count in [max(2, low), high] (as far as n allows) with the best silhouette score
    (cosine)."""
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.metrics import silhouette_score

    def split(k: int) -> np.ndarray:
        return np.asarray(
            AgglomerativeClustering(n_clusters=k, metric="cosine", linkage="average").fit_predict(embeddings)
        )

    count = len(embeddings)
    one = np.zeros(count, int)
    if count < 2 or high <= 1:
        return one
    if low <= 1:
        tree = AgglomerativeClustering(
            n_clusters=1, metric="cosine", linkage="average", compute_distances=True
        )
        if float(tree.fit(embeddings).distances_[-1]) < ONE_SPEAKER_DISTANCE:
            return one
    low = max(2, low)
    if low >= count:  # more speakers asked for than windows: each window its own
        return np.arange(count)
    # Silhouette is defined for 2 <= k <= n - 1.
    scored = [
        (float(silhouette_score(embeddings, labels, metric="cosine")), k, labels)
        for k in range(low, min(high, count - 1) + 1)
        for labels in [split(k)]
    ]
    if not scored:
        return split(min(high, count))
    return max(scored, key=lambda item: item[0])[2]


def window_turns(places: list[tuple[float, float, float]], labels: np.ndarray) -> list[Turn]:
    """Turns from labelled windows: each region's time is shared among its windows by nearest
    centre, and neighbouring stretches of one speaker within a region are one turn."""
    turns: list[Turn] = []
    for index, ((start, end, centre), label) in enumerate(zip(places, labels, strict=True)):
        speaker = str(int(label))
        same_region = index > 0 and places[index - 1][:2] == (start, end)
        begin = (places[index - 1][2] + centre) / 2 if same_region else start
        last = index + 1 == len(places) or places[index + 1][:2] != (start, end)
        finish = end if last else (centre + places[index + 1][2]) / 2
        begin, finish = max(begin, start), min(max(finish, begin), end)
        if same_region and turns and turns[-1].speaker == speaker:
            turns[-1] = replace(turns[-1], end=finish)
        else:
            turns.append(Turn(begin, finish, speaker))
    return [turn for turn in turns if turn.end > turn.start]


def smooth(turns: list[Turn]) -> list[Turn]:
    """Turns shorter than FLIP_S touching a turn of one same speaker on both sides join them;
    touching turns of one speaker become one."""
    out: list[Turn] = []
    for turn in turns:
        if out and out[-1].speaker == turn.speaker and out[-1].end >= turn.start:
            out[-1] = replace(out[-1], end=max(out[-1].end, turn.end))
        else:
            out.append(turn)
    index = 1
    while index < len(out) - 1:
        previous, turn, following = out[index - 1], out[index], out[index + 1]
        touching = previous.end >= turn.start and turn.end >= following.start
        if touching and turn.end - turn.start < FLIP_S and previous.speaker == following.speaker:
            out[index - 1 : index + 2] = [Turn(previous.start, following.end, previous.speaker)]
        else:
            index += 1
    return out


def renumber(turns: list[Turn]) -> list[Turn]:
    """Turns sorted by start, labelled SPEAKER_00, SPEAKER_01, ... by first appearance."""
    names: dict[str, str] = {}
    out = []
    for turn in sorted(turns, key=lambda t: (t.start, t.end)):
        name = names.setdefault(turn.speaker, f"SPEAKER_{len(names):02d}")
        out.append(Turn(round(turn.start, 3), round(turn.end, 3), name))
    return out


# -- attribution -----------------------------------------------------------------------------

# Seconds around a segment whose turns its words are attributed among (`attribution`): a word
# takes the turn overlapping it most, else the nearest, so farther turns never matter unless no
# turn is this near.
NEAR_S = 30.0


def attribution(turns: list[Turn]) -> Callable[[Segment], list[Segment]]:
    """`attribute` for one segment at a time against the turns near it (within NEAR_S; all of
    them when none is): the cost of a segment stays that of its neighbourhood, not of the whole
    file's turns (a long meeting has thousands)."""
    starts = np.array([turn.start for turn in turns])
    ends = np.array([turn.end for turn in turns])

    def attribute_one(segment: Segment) -> list[Segment]:
        if not turns:
            return [segment]
        near = np.flatnonzero((ends >= segment.start - NEAR_S) & (starts <= segment.end + NEAR_S))
        return attribute([segment], [turns[index] for index in near] or turns)

    return attribute_one


def attribute(segments: list[Segment], turns: list[Turn]) -> list[Segment]:
    """Speakers onto words and segments, by whisperX's own rule (whisperx.diarize.
    assign_word_speakers with fill_nearest: the speaker whose turns overlap a word most, else
    the nearest turn). A word without times takes its nearest timed neighbour's speaker (the
    segment's when it has none). A segment whose words change speaker is split there into
    consecutive segments of one speaker each: their text joined from the words (with spaces, or
    without for Chinese and Japanese text written without them), their times from their words;
    other fields are kept on every part. A segment without words takes the speaker overlapping
    it most. No turns: the segments unchanged."""
    if not turns:
        return list(segments)
    os.environ["PYANNOTE_METRICS_ENABLED"] = "false"
    offline()  # whisperx.diarize imports pyannote.audio, and it huggingface_hub
    import pandas as pd
    from whisperx.diarize import assign_word_speakers

    frame = pd.DataFrame([{"start": t.start, "end": t.end, "speaker": t.speaker} for t in turns])
    result: dict[str, Any] = {"segments": [_as_whisperx(segment) for segment in segments]}
    assign_word_speakers(frame, result, fill_nearest=True)  # type: ignore[arg-type]
    out: list[Segment] = []
    for segment, assigned in zip(segments, result["segments"], strict=True):
        speaker = assigned.get("speaker") or _nearest(turns, segment.start, segment.end)
        if not segment.words:
            out.append(replace(segment, speaker=speaker))
            continue
        speakers: list[str | None] = [w.get("speaker") for w in assigned["words"]]
        _fill_untimed(speakers, speaker)
        words = [
            word.model_copy(update={"speaker": who})
            for word, who in zip(segment.words, speakers, strict=True)
        ]
        out.extend(_split(segment, words))
    return out


def _as_whisperx(segment: Segment) -> dict[str, Any]:
    entry: dict[str, Any] = {"start": segment.start, "end": segment.end, "text": segment.text}
    if segment.words:
        # Only timed words carry "start": whisperX skips the others, and they are filled below.
        entry["words"] = [
            {"word": w.word, "start": w.start, "end": w.end if w.end is not None else w.start}
            if w.start is not None
            else {"word": w.word}
            for w in segment.words
        ]
    return entry


def _nearest(turns: list[Turn], start: float, end: float) -> str:
    middle = (start + end) / 2
    return min(
        turns,
        key=lambda t: 0.0 if t.start <= middle <= t.end else min(abs(t.start - middle), abs(t.end - middle)),
    ).speaker


def _fill_untimed(speakers: list[str | None], fallback: str) -> None:
    """A word without a speaker (no times) takes its previous word's, else its next word's, else
    the segment's: a word without times sits between its neighbours."""
    for index, who in enumerate(speakers):
        if who is None:
            before = next((s for s in reversed(speakers[:index]) if s is not None), None)
            after = next((s for s in speakers[index + 1 :] if s is not None), None)
            speakers[index] = before or after or fallback


def _split(segment: Segment, words: list[Word]) -> list[Segment]:
    runs: list[list[Word]] = []
    for word in words:
        if runs and runs[-1][-1].speaker == word.speaker:
            runs[-1].append(word)
        else:
            runs.append([word])
    if len(runs) == 1:
        return [replace(segment, words=words, speaker=words[0].speaker)]
    joiner = "" if _unspaced(segment.text) else " "
    parts: list[Segment] = []
    for index, run in enumerate(runs):
        starts = [w.start for w in run if w.start is not None]
        ends = [w.end for w in run if w.end is not None]
        start = min(starts) if starts else (segment.start if index == 0 else parts[-1].end)
        end = max(ends) if ends else (segment.end if index == len(runs) - 1 else start)
        text = joiner.join(w.word.strip() for w in run)
        parts.append(
            replace(segment, start=start, end=max(end, start), text=text, words=run, speaker=run[0].speaker)
        )
    return parts


def _unspaced(text: str) -> bool:
    """Chinese or Japanese text written without spaces between words (CJK ideographs or kana,
    and no space inside the text)."""
    stripped = text.strip()
    cjk = any(
        "\u3040" <= ch <= "\u30ff" or "\u3400" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff"
        for ch in stripped
    )
    return cjk and " " not in stripped
