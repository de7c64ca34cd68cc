"""Multi-speaker mixes built at test time from the real speech in ../shared/audio, with their
exact reference: who speaks when, to the sample.

A mix is a sequence of turns: a stretch of one speaker's clip (seconds into the clip, cut where
Silero hears speech so the reference has no leading or trailing silence), placed after a pause
(or, with a negative pause, overlapping the previous turn: both sound at once). Every clip is
scaled to the same loudness (RMS) first, so no speaker is found by loudness alone. Nothing is
random: the turns are written down here.

Speakers are people, not files: LibriSpeech 1995, 1272, 61 and VOiCES sp0307 are different
readers; ARCTIC aew and axb, LJ Speech, AMI ES2011a headset 0, speechbrain's example, JFK; the
AISHELL-3 speakers SSB0005, SSB0018, SSB0038, SSB0073, SSB0080, SSB0145 are different people
(../shared/audio/SOURCES.md, ../shared/audio/dev/SOURCES.md).

    audio, reference = three_speakers().audio, three_speakers().reference
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from functions.transcriber.schema import SAMPLE_RATE
from tests.support.audio import decode_audio

AUDIO = Path(__file__).resolve().parents[2].parent / "shared" / "audio"
DEV = AUDIO / "dev"

# speaker id -> the clip of that person
CLIPS: dict[str, Path] = {
    "ljspeech": DEV / "en_ljspeech_LJ001-0001.wav",
    "jfk": AUDIO / "jfk.flac",
    "libri1995": AUDIO / "librispeech-1995-1837-0001.wav",
    "libri1272": DEV / "en_librispeech_1272-128104-0000.wav",
    "libri61": DEV / "en_librispeech_61-70968-0000.flac",
    "voices0307": DEV / "en_voices_src-sp0307-ch127535-sg0042.wav",
    "arctic_aew": DEV / "en_arctic_aew_a0001.wav",
    "arctic_axb": DEV / "en_arctic_axb_a0004.wav",
    "ami": DEV / "en_ami_ES2011a_headset0_40-46s.wav",
    "speechbrain": DEV / "en_speechbrain_example2.flac",
    "SSB0005": DEV / "zh_aishell3_SSB00050112.wav",
    "SSB0018": DEV / "zh_aishell3_SSB00180170.wav",
    "SSB0038": DEV / "zh_aishell3_SSB00380324.wav",
    "SSB0073": DEV / "zh_aishell3_SSB00730374.wav",
    "SSB0080": DEV / "zh_aishell3_SSB00800191.wav",
    "SSB0145": DEV / "zh_aishell3_SSB01450004.wav",
}
TARGET_RMS = 0.05  # about -26 dBFS, every clip's speech
LEAD_S = 0.5  # silence before the first turn


@dataclass(frozen=True)
class Piece:
    """One turn of a mix: `speaker`'s clip from `start` to `end` (seconds into the clip), placed
    `pause` seconds after the previous turn ends (negative: overlapping it by that much)."""

    speaker: str
    start: float
    end: float
    pause: float = 0.7


@dataclass(frozen=True)
class Mix:
    """16 kHz mono float32 audio in [-1, 1), shape (samples,), and its reference turns
    (start, end, speaker) in seconds, sorted by start; overlapping turns are both listed."""

    name: str
    audio: np.ndarray
    reference: list[tuple[float, float, str]]

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    @property
    def speakers(self) -> list[str]:
        return sorted({speaker for _, _, speaker in self.reference})

    def annotation(self):  # -> pyannote.core.Annotation (imported lazily: a test dependency)
        """The reference as pyannote.core's Annotation (for pyannote.metrics)."""
        from pyannote.core import Annotation, Segment

        annotation = Annotation(uri=self.name)
        for index, (start, end, speaker) in enumerate(self.reference):
            annotation[Segment(start, end), index] = speaker
        return annotation

    def write_wav(self, path: Path) -> Path:
        """The mix as a 16-bit PCM mono 16 kHz WAV file at `path`."""
        pcm = np.clip(np.round(self.audio * 32768.0), -32768, 32767).astype("<i2")
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(SAMPLE_RATE)
            out.writeframes(pcm.tobytes())
        return path


@cache
def _clip(speaker: str) -> np.ndarray:
    audio = decode_audio(CLIPS[speaker])
    rms = float(np.sqrt(np.mean(audio**2)))
    return (audio * (TARGET_RMS / rms)).astype(np.float32)


def build(name: str, pieces: list[Piece], tail_s: float = 0.5) -> Mix:
    """Place `pieces` one after another at exact sample offsets and sum them (overlaps add)."""
    placed: list[tuple[int, np.ndarray, str]] = []
    cursor = round(LEAD_S * SAMPLE_RATE)  # where the previous turn ended, in samples
    for index, piece in enumerate(pieces):
        clip = _clip(piece.speaker)
        stretch = clip[round(piece.start * SAMPLE_RATE) : round(piece.end * SAMPLE_RATE)]
        offset = cursor if index == 0 else max(0, cursor + round(piece.pause * SAMPLE_RATE))
        placed.append((offset, stretch, piece.speaker))
        cursor = offset + len(stretch)
    length = max(offset + len(stretch) for offset, stretch, _ in placed) + round(tail_s * SAMPLE_RATE)
    audio = np.zeros(length, np.float32)
    for offset, stretch, _ in placed:
        audio[offset : offset + len(stretch)] += stretch
    audio = np.clip(audio, -1.0, 1.0 - 1 / 32768)
    reference = sorted(
        (offset / SAMPLE_RATE, (offset + len(stretch)) / SAMPLE_RATE, speaker)
        for offset, stretch, speaker in placed
    )
    return Mix(name, audio, reference)


@cache
def three_speakers() -> Mix:
    """Three English readers (LJ Speech, JFK, LibriSpeech 1995), 30.8 s: turns of 2.1-5.2 s,
    one short turn (0.6 s, LJ Speech) and one overlap (0.4 s, LibriSpeech over JFK)."""
    return build(
        "three_speakers",
        [
            Piece("ljspeech", 0.80, 4.08),
            Piece("jfk", 5.36, 7.70),
            Piece("libri1995", 2.70, 6.40),
            Piece("ljspeech", 4.40, 9.66),
            Piece("jfk", 8.16, 10.56),
            Piece("libri1995", 0.08, 2.45, pause=-0.4),
            Piece("jfk", 0.24, 2.32),
            Piece("ljspeech", 0.04, 0.70),  # a short turn
            Piece("libri1995", 6.50, 8.73),
        ],
        tail_s=1.5,
    )


def two_speakers_en() -> Mix:
    """Two English readers (LibriSpeech 1272, LJ Speech), about 25 s: a clip cut mid-sentence
    into turns, a 1.1 s turn, one 0.5 s overlap."""
    return build(
        "two_en",
        [
            Piece("libri1272", 0.55, 3.10),
            Piece("ljspeech", 0.80, 4.08, pause=0.5),
            Piece("libri1272", 3.10, 5.50, pause=0.6),
            Piece("ljspeech", 4.40, 5.50, pause=0.4),  # short
            Piece("libri1272", 0.55, 2.60, pause=-0.5),
            Piece("ljspeech", 5.50, 9.66, pause=0.8),
            Piece("libri1272", 2.60, 5.50, pause=0.6),
        ],
    )


def two_speakers_zh() -> Mix:
    """Two Mandarin readers (AISHELL-3 SSB0005, SSB0018), about 28 s, with a 1.35 s turn and a 0.4 s
    overlap."""
    return build(
        "two_zh",
        [
            Piece("SSB0005", 0.45, 4.88),
            Piece("SSB0018", 0.10, 2.55),
            Piece("SSB0005", 0.45, 2.60, pause=0.5),
            Piece("SSB0018", 3.00, 4.35, pause=0.5),  # short, cut mid-phrase
            Piece("SSB0005", 2.60, 4.88, pause=-0.4),
            Piece("SSB0018", 4.66, 6.50, pause=0.6),
            Piece("SSB0005", 0.45, 4.88, pause=0.9),
            Piece("SSB0018", 0.10, 4.48, pause=0.6),
        ],
    )


def four_speakers() -> Mix:
    """Four speakers, two English (JFK, ARCTIC axb) and two Mandarin (AISHELL-3 SSB0038, SSB0080),
    about 40 s: short turns (0.9-1.4 s) and two overlaps."""
    return build(
        "four_mixed",
        [
            Piece("jfk", 5.36, 7.70),
            Piece("SSB0038", 0.45, 5.20),
            Piece("arctic_axb", 0.15, 2.78),
            Piece("SSB0080", 0.25, 4.85, pause=0.5),
            Piece("jfk", 8.16, 10.56, pause=-0.5),
            Piece("arctic_axb", 0.15, 1.30, pause=0.6),  # short
            Piece("SSB0038", 0.45, 2.80, pause=0.6),
            Piece("SSB0080", 4.95, 6.45, pause=0.7),
            Piece("jfk", 0.24, 2.32, pause=0.8),
            Piece("SSB0038", 2.80, 5.20, pause=0.5),
            Piece("arctic_axb", 1.30, 2.78, pause=-0.3),
            Piece("SSB0080", 0.25, 4.85, pause=0.7),
            Piece("jfk", 3.28, 4.40, pause=0.6),  # short
        ],
    )


def three_speakers_meeting() -> Mix:
    """Three English speakers of different recordings (AMI headset, VOiCES sp0307, ARCTIC aew),
    about 25 s, many short turns (the AMI speaker's 1.1-1.4 s)."""
    return build(
        "three_meeting",
        [
            Piece("voices0307", 0.60, 3.24),
            Piece("ami", 1.42, 2.90),  # short
            Piece("arctic_aew", 0.12, 3.75),
            Piece("ami", 3.32, 4.46, pause=0.5),  # short
            Piece("voices0307", 0.60, 3.24, pause=0.6),
            Piece("arctic_aew", 0.12, 3.75, pause=-0.4),
            Piece("ami", 1.42, 2.90, pause=0.8),  # short
            Piece("voices0307", 0.60, 3.24, pause=0.6),
        ],
    )


def benchmark_mixes() -> list[Mix]:
    """The diarization benchmark's mixes: 2, 3 and 4 speakers, English and Mandarin."""
    return [two_speakers_en(), two_speakers_zh(), three_speakers(), three_speakers_meeting(), four_speakers()]
