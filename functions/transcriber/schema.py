"""The shapes and units every model function shares, written down once.

Audio is 16 kHz mono: float32 in [-1, 1) when a model hears it (`ModelAdapter.transcribe`,
`ModelAdapter.detect_language`), int16 (s16le) on disk after decoding (functions/transcriber/audio.py).
Times are seconds as float: relative to the window a model was given while it runs, on the whole
file's timeline (to the millisecond) once the skeleton has placed them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from events.errors import CodedError
from events.models import Decoding, Diarization, Word

SAMPLE_RATE = 16_000  # samples per second of every audio array and decoded file


class JobFailed(CodedError):
    """The job cannot succeed (bad media, a refused option, a language the model cannot
    transcribe): reported as a `failed` event with `code` and `message`, not retried."""


class JobStopped(Exception):
    """Raised inside the model's thread, at its next report, once its job was given up on."""


class ModelUnavailable(RuntimeError):
    """The model cannot be loaded from where the settings point; the message says how to fix it.
    The worker stays up, not ready, and says so on its readiness probe."""


@dataclass
class Segment:
    """One stretch of transcribed speech: `start` and `end` in seconds, `words` with their own
    times when the model gives them, Whisper's `avg_logprob` and `no_speech_prob` when known,
    `language` as an ISO 639-1 code."""

    start: float
    end: float
    text: str
    words: list[Word] | None = None
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    language: str | None = None
    # Who spoke (`SPEAKER_00`...), on a diarized job: one speaker per segment (events.models.Diarization).
    speaker: str | None = None


@dataclass
class Transcript:
    """What a model made of some audio: its language (ISO 639-1) and that language's
    probability when the model detected it, and its segments in time order."""

    language: str | None
    language_probability: float | None = None
    segments: list[Segment] = field(default_factory=list)
    # How word times were found: "wav2vec2", or why not ("skipped: ...").
    alignment: str | None = None


class ModelAdapter(Protocol):
    """What is specific to one model. Its methods block; the skeleton runs them in a thread.

    `load` reads the model from local disk (never a hub: it calls
    `functions.transcriber.hub.offline()` before importing its libraries) and raises
    ModelUnavailable, with the fix in its message, when it cannot.

    `transcribe` gets one window of 16 kHz mono float32 audio (times relative to the window) and
    the file's language (given, detected by the skeleton, or `default_language`), calls
    `on_segment` as soon as it has a segment and `on_progress` with the fraction of the window
    done, and may raise JobFailed for input it cannot transcribe. `decoding` is the job's task,
    prompt, hotwords and temperature (None: the defaults); the adapter applies what its model
    supports (functions/<model>/README.md says which) and, for `translate`, gives English segments
    (`Segment.language` "en") while `Transcript.language` stays the language spoken. Routing
    never sends a job whose task the model cannot do (events/registry.py TASKS).

    `detect_language` gives the probability of each language the model knows (ISO 639-1 codes,
    summing to 1) for one clip of at most 30 s of 16 kHz mono float32 audio: the skeleton's
    language identification (functions/transcriber/language.py) calls it on clips of the file's
    speech."""

    name: str
    # The language of a job that names none, when it is not routed by detection (belle2, a
    # Mandarin fine-tune: "zh"); None: the skeleton detects it.
    default_language: str | None

    def load(self) -> None: ...

    def detect_language(self, audio: np.ndarray) -> dict[str, float]: ...

    def transcribe(
        self,
        audio: np.ndarray,
        language: str | None,
        on_segment: Callable[[Segment], None],
        on_progress: Callable[[float], None],
        *,
        decoding: Decoding | None = None,
    ) -> Transcript: ...


# What a diarized job's segments go through: one segment (times on the whole file) in, the same
# speech out as segments of one speaker each (`Segment.speaker`, and `Word.speaker` on its words).
SpeakerAttribution = Callable[[Segment], list[Segment]]


@runtime_checkable
class Diarizes(Protocol):
    """A model adapter that can name speakers (events/registry.py DIARIZES): `diarize` hears the
    whole file once (16 kHz mono float32, shape (samples,)), before it is transcribed, and gives
    back how to attribute each segment to its speaker. It blocks (the skeleton runs it in a
    thread) and must end within STALL_TIMEOUT_S; raises JobFailed or ModelUnavailable when the
    diarization model cannot be used."""

    def diarize(self, audio: np.ndarray, diarization: Diarization) -> SpeakerAttribution: ...
