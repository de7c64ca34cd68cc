"""The shared code of every model function (whisperx, belle2, and any model added beside them),
a module per concept:

| module      | what                                                                          |
|-------------|-------------------------------------------------------------------------------|
| `schema`    | shapes and units: SAMPLE_RATE, Segment, Transcript, the ModelAdapter protocol, |
|             | Diarizes (an adapter that names speakers), SpeakerAttribution, JobFailed,     |
|             | JobStopped, ModelUnavailable                                                  |
| `audio`     | media intake (probe, track choice, decode to 16 kHz mono within the limits)   |
|             | and the windows the decoded audio is cut into                                 |
| `vad`       | speech regions (Silero VAD)                                                   |
| `language`  | language identification from speech across the whole file                     |
| `hub`       | the hub-offline policy, applied when a model loads                            |
| `cancel`    | whether a job was canceled (before it starts, and while it runs): JobCanceled |
| `skeleton`  | TranscriptionFunction: the function's lifecycle and a job's steps             |

An adapter (functions/<model>/model.py) imports what it needs from here; importing this package
has no side effect (the offline policy is applied by `start`/`load`, see `hub`).
"""

from functions.transcriber.audio import DecodedAudio, Limits, decode, windows
from functions.transcriber.hub import offline
from functions.transcriber.schema import (
    SAMPLE_RATE,
    Diarizes,
    JobFailed,
    JobStopped,
    ModelAdapter,
    ModelUnavailable,
    Segment,
    SpeakerAttribution,
    Transcript,
)
from functions.transcriber.skeleton import TranscriptionFunction

__all__ = [
    "SAMPLE_RATE",
    "DecodedAudio",
    "Diarizes",
    "JobFailed",
    "JobStopped",
    "Limits",
    "ModelAdapter",
    "ModelUnavailable",
    "Segment",
    "SpeakerAttribution",
    "Transcript",
    "TranscriptionFunction",
    "decode",
    "offline",
    "windows",
]
