"""The data of every KlipNote event, written down once (pydantic v2).

These models are the contract between functions and with the outside world: their JSON
Schemas are exported (`klipnote schemas`) so other systems can publish valid requests.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

OutputFormat = Literal["json", "srt", "vtt", "txt"]
# The media type of each result format, as stored and as served (SubRip has no registered type:
# application/x-subrip is what players and browsers know; text/vtt is W3C WebVTT's registered type).
MEDIA_TYPES: dict[OutputFormat, str] = {
    "json": "application/json",
    "srt": "application/x-subrip",
    "vtt": "text/vtt",
    "txt": "text/plain; charset=utf-8",
}
# Why a job went to its model (events/routing.py).
RoutingReason = Literal["requested", "language rule", "detected language", "default"]
DEFAULT_FORMATS: list[OutputFormat] = ["json", "srt", "vtt", "txt"]
# What the model does with the speech: write it down in its language, or translate it to English
# (Whisper's two tasks).
Task = Literal["transcribe", "translate"]
# Echoed metadata, as JSON: records and events stay small whichever way a job came in.
MAX_METADATA_BYTES = 4096


def split_formats(value: str) -> tuple[list[OutputFormat], list[str]]:
    """A comma-separated list of output formats, as the API, the CLI and object metadata take it:
    the known ones (in order, once each) and the unknown names. Each caller decides what an
    unknown name means (refused at the API, ignored in metadata)."""
    names = list(dict.fromkeys(name.strip().lower() for name in value.split(",") if name.strip()))
    known: list[OutputFormat] = [name for name in names if name in DEFAULT_FORMATS]  # type: ignore[misc]
    return known, [name for name in names if name not in DEFAULT_FORMATS]


def utcnow() -> datetime:
    return datetime.now(UTC)


class EventData(BaseModel):
    # Unknown fields are refused: a typo in another system's request must not pass silently.
    model_config = ConfigDict(extra="forbid")


class ObjectRef(EventData):
    """An object in S3-compatible storage."""

    bucket: str = Field(min_length=3, max_length=63)
    key: str = Field(min_length=1, max_length=1024)
    etag: str | None = None
    size: int | None = Field(None, ge=0)
    content_type: str | None = None


class WebhookTarget(EventData):
    """Where a job's end is announced (Standard Webhooks: signed, retried on a schedule)."""

    url: str = Field(min_length=8, max_length=2048, pattern=r"^https?://", description="http(s) URL.")
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Static headers sent with every delivery, e.g. an Authorization header the "
        "receiver checks. Their values are never logged nor shown in job records.",
    )


# 0-based index among a file's audio tracks, as ffmpeg's `a:N` stream specifier counts them.
AUDIO_TRACK_DESCRIPTION = (
    "Which audio track to transcribe: 0-based among the file's audio tracks (ffmpeg's a:N); "
    "by default the track flagged default, else the first."
)


class AudioTrack(EventData):
    """One audio track of a media file, as ffprobe reports it."""

    index: int = Field(ge=0, description="0-based among the file's audio tracks (ffmpeg's a:N).")
    stream_index: int = Field(ge=0, description="Index among all of the file's streams.")
    codec: str | None = None
    channels: int = Field(0, ge=0)
    sample_rate: int | None = Field(None, description="Hz.")
    language: str | None = Field(
        None, pattern=r"^[a-z]{2,3}$", description="The track's language tag (ISO 639-2), if any."
    )
    title: str | None = Field(None, max_length=200)
    default: bool = Field(False, description="Flagged default in the container.")


class MediaInfo(EventData):
    """What was transcribed of a file: which track, how its channels were mixed, where it starts on
    the file's timeline, and whether the file was cut short."""

    format: str = Field(description="The container, as ffprobe names it (e.g. mov,mp4,m4a,3gp,3g2,mj2).")
    track: AudioTrack
    track_count: int = Field(ge=1, description="Audio tracks in the file.")
    start_offset_s: float = Field(
        0.0, ge=0.0, description="Seconds from the file's start to the track's first sample. The "
        "decoded audio begins with that much silence: every time is on the file's timeline."
    )  # fmt: skip
    duration_s: float = Field(ge=0.0, description="Seconds of audio decoded, from the file's start.")
    declared_duration_s: float | None = Field(None, description="Seconds the container declares.")
    truncated: bool = Field(
        False, description="The file ends early or is damaged: everything that decoded was transcribed."
    )
    downmix: str = Field(description="How the track's channels became one, in words.")


class Decoding(EventData):
    """How a model decodes one job, as the request asked: the same object travels from the
    request to the record, the dispatched work item and the model's adapter. Each model applies
    what it supports (functions/<model>/README.md); routing refuses a task no enabled model can do."""

    task: Task = Field("transcribe", description="transcribe, or translate to English.")
    prompt: str | None = Field(
        None,
        max_length=2000,
        description="Initial prompt: text the model reads as what came before (spelling, names, "
        "style). Whisper keeps its last 223 tokens.",
    )
    hotwords: str | None = Field(
        None, max_length=1000, description="Words and phrases the model should expect, e.g. names."
    )
    temperature: float | None = Field(
        None, ge=0.0, le=1.0, description="The first sampling temperature; unset: the model's own schedule."
    )


# Speakers one diarized job may ask for at most (min_speakers, max_speakers): a bound on the
# clustering's work, far above a meeting's.
MAX_SPEAKERS = 20


def _unset(value: object) -> bool:
    """Whether an optional field added after version 1 of its event is unset: such a field is
    left out of the event then (`Field(exclude_if=_unset)`), so an event of a job that does not
    use it is the same as before the field existed and a function not yet upgraded reads it."""
    return value is None


class Diarization(EventData):
    """Who spoke when, asked for by a job: its presence on a request turns diarization on (the
    API's `diarize=true`). Speakers are then named on words, segments and cues as `SPEAKER_00`,
    `SPEAKER_01`, ... in the order they first speak (pyannote's and WhisperX's labels). Counts
    bound the number of speakers found; unset: estimated from the audio (by a pyannote pipeline
    without a bound; by the embedded diarizer between 1 and 8, functions/whisperx/README.md)."""

    min_speakers: int | None = Field(None, ge=1, le=MAX_SPEAKERS, description="At least this many speakers.")
    max_speakers: int | None = Field(None, ge=1, le=MAX_SPEAKERS, description="At most this many speakers.")

    @model_validator(mode="after")
    def _ordered(self) -> Diarization:
        if self.min_speakers is not None and self.max_speakers is not None:
            if self.min_speakers > self.max_speakers:
                raise ValueError("min_speakers is more than max_speakers")
        return self


class TranscriptionRequested(EventData):
    """Someone wants a file transcribed. Every way in (API, bucket, other systems) makes one."""

    job_id: str | None = Field(
        None, description="Assigned by ingest; other systems leave it out and get one derived."
    )
    media: ObjectRef
    model: str | None = Field(None, description="Explicit model; otherwise routing decides.")
    language: str | None = Field(None, description="ISO 639-1 code; otherwise detected.")
    formats: list[OutputFormat] = Field(default_factory=lambda: list(DEFAULT_FORMATS))
    metadata: dict[str, str] = Field(
        default_factory=dict, description="Echoed back on completion; at most 4096 bytes as JSON."
    )
    filename: str | None = Field(None, max_length=255)
    webhook: WebhookTarget | None = Field(None, description="Called when the job completes or fails.")
    webhook_in_record: bool = Field(
        False,
        description="Set by ingest instead of `webhook`: the job has a webhook, whose URL and headers "
        "(tokens live there) are kept in the job record only, never in an event. Other systems send "
        "`webhook`; a request with this flag and no record holding a webhook fails "
        "(webhook_reference_unknown).",
    )
    audio_track: int | None = Field(None, ge=0, description=AUDIO_TRACK_DESCRIPTION)
    decoding: Decoding = Field(default_factory=Decoding, description="Task, prompt, hotwords, temperature.")
    diarization: Diarization | None = Field(
        None,
        exclude_if=_unset,
        description="Name who spoke when (speaker labels); unset: no diarization, at no cost.",
    )
    delete_after: int | None = Field(
        None,
        ge=0,
        le=10 * 365 * 24 * 3600,
        description="Seconds after the job ends when its upload, results and record are deleted; "
        "unset: RESULTS_TTL_S.",
    )

    @model_validator(mode="after")
    def _one_webhook(self) -> TranscriptionRequested:
        # A reference and a target at once would leave open which one is called.
        if self.webhook_in_record and self.webhook is not None:
            raise ValueError("webhook and webhook_in_record exclude each other")
        return self

    @field_validator("metadata")
    @classmethod
    def _metadata_bounded(cls, metadata: dict[str, str]) -> dict[str, str]:
        # The form's limit (functions/ingest/api/forms.py), for every way in: records stay small.
        if len(json.dumps(metadata, ensure_ascii=False, separators=(",", ":")).encode()) > MAX_METADATA_BYTES:
            raise ValueError(f"metadata is limited to {MAX_METADATA_BYTES} bytes as JSON")
        return metadata


class TranscriptionDispatched(EventData):
    """A routed job on its model's queue (`transcribe.<model>`)."""

    job_id: str
    media: ObjectRef
    model: str
    language: str | None = None
    language_probability: float | None = Field(
        None, ge=0.0, le=1.0, description="Set when `language` was detected by the model that handed "
        "the job over."
    )  # fmt: skip
    routing_reason: RoutingReason | None = Field(
        None, description="Why this model: `default` with no language means the model function detects "
        "the language and may hand the job over (events/routing.py)."
    )  # fmt: skip
    formats: list[OutputFormat] = Field(default_factory=lambda: list(DEFAULT_FORMATS))
    audio_track: int | None = Field(None, ge=0, description=AUDIO_TRACK_DESCRIPTION)
    decoding: Decoding = Field(default_factory=Decoding)
    diarization: Diarization | None = Field(None, exclude_if=_unset)


class TranscriptionQueued(EventData):
    """The job is on its model's queue (lifecycle twin of the dispatched work item)."""

    job_id: str
    model: str
    routing_reason: RoutingReason | None = None
    handed_over_from: str | None = Field(
        None, description="The model that detected the language and handed the job over to this one."
    )


class LanguageDetected(EventData):
    """The model function that received a job naming neither model nor language listened to it
    (functions/transcriber/language.py) and applied the language rules: the job stays, or, with `handover`,
    leaves this model and ingest re-dispatches it to the model the rules name."""

    job_id: str
    run_id: str
    model: str = Field(description="The model function that listened.")
    language: str = Field(description="ISO 639-1 code, as Whisper's language tokens name it.")
    probability: float = Field(ge=0.0, le=1.0)
    speech_seconds: float = Field(ge=0.0, description="Seconds of speech listened to.")
    windows: int = Field(ge=0, description="Stretches of speech (up to 30 s each) listened to.")
    handover: bool = Field(description="The job leaves this model for the one the language rules name.")


class Word(EventData):
    """One word of a segment, as the model (or forced alignment) timed it. Times are seconds on
    the media's own timeline (sample n of the decoded 16 kHz audio is at n / 16000 s); None when
    the word could not be timed (alignment skipped it)."""

    word: str
    start: float | None = Field(None, description="Seconds from the start of the media.")
    end: float | None = Field(None, description="Seconds from the start of the media.")
    score: float | None = Field(None, description="The model's or the aligner's confidence, 0-1.")
    speaker: str | None = Field(
        None, exclude_if=_unset, description="Who said it (`SPEAKER_00`...), on a diarized job."
    )


class SegmentTranscribed(EventData):
    """One segment, published as soon as the model yields it (`segments.<job_id>`)."""

    job_id: str
    run_id: str
    sequence: int = Field(ge=0, description="Order of the segment in its run, from 0, without gaps.")
    start: float = Field(description="Seconds from the start of the media.")
    end: float = Field(description="Seconds from the start of the media.")
    text: str
    words: list[Word] | None = None
    language: str | None = None
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    speaker: str | None = Field(
        None,
        exclude_if=_unset,
        description="Who spoke (`SPEAKER_00`...), on a diarized job: one speaker per segment.",
    )


class TranscriptionProgress(EventData):
    """How far a run is (`transcription.progress.<job_id>`): its stage and the fraction of the
    media's seconds done; progress may repeat or arrive late, never moves a job back."""

    job_id: str
    run_id: str
    model: str
    stage: Literal["fetching", "decoding", "diarizing", "transcribing", "optimizing"]
    fraction: float = Field(ge=0.0, le=1.0)


class TranscriptionTranscribed(EventData):
    """A run finished; optimize assembles exactly `segment_count` segments of `run_id`."""

    job_id: str
    run_id: str
    model: str
    language: str | None = None
    language_probability: float | None = None
    segment_count: int = Field(ge=0)
    audio_seconds: float = Field(ge=0.0)
    formats: list[OutputFormat] = Field(default_factory=lambda: list(DEFAULT_FORMATS))
    timings: dict[str, float] = Field(default_factory=dict, description="Seconds per stage.")
    alignment: str | None = Field(
        None, description='How word times were found: "wav2vec2", or why alignment was skipped.'
    )
    media_info: MediaInfo | None = Field(None, description="What was decoded: track, timeline, truncation.")


class TranscriptionCompleted(EventData):
    """The job's results are stored, one object per requested format (optimize)."""

    job_id: str
    run_id: str
    model: str
    language: str | None = None
    results: dict[OutputFormat, ObjectRef]
    stats: dict[str, Any] = Field(
        default_factory=dict,
        description="What optimize did: `segments` and `cues` counted, `removed` (sentence and n-gram "
        "loops, hallucinations, doubtful segments, characters), `simplified_characters`, `rules` "
        "(compliance with the segment rules) and `optimize_seconds`.",
    )


class TranscriptionFailed(EventData):
    """The job ended without results (`events.lifecycle.failed` builds it from a CodedError);
    docs/bad-input.md lists the codes."""

    job_id: str
    code: str = Field(description="Machine-readable reason, e.g. media_unreadable.")
    message: str = Field(description="What a person needs to know.")
    function: str
    run_id: str | None = None


class TranscriptionCanceled(EventData):
    """The job was canceled (ingest, `POST /v1/jobs/{id}/cancel`): a queued job never starts, a
    running one stops at its next window, and nothing it produces afterwards counts."""

    job_id: str
    reason: str = Field("canceled by request", max_length=500)


class WebhookAttempted(EventData):
    """One delivery attempt of a job's webhook, for the job record (never the headers)."""

    job_id: str
    webhook_id: str = Field(description="The `webhook-id` header: the same on every retry.")
    attempt: int = Field(ge=1)
    outcome: Literal["delivered", "retrying", "gave_up", "refused"]
    status_code: int | None = None
    error: str | None = None
    next_attempt_in_s: float | None = None


class DeadLetter(EventData):
    """A message a consumer gave up on, kept with the reason so nothing is lost silently."""

    consumer: str
    subject: str
    reason: str
    deliveries: int
    headers: dict[str, str] = Field(default_factory=dict)
    body: str = Field(description="The original payload (UTF-8, or base64 if binary).")
    body_encoding: Literal["utf-8", "base64"] = "utf-8"
