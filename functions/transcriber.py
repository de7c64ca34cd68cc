"""The transcription skeleton every model function shares: fetch the media, decode it, run the
model, stream segments and progress as events, report `transcribed` or `failed`.

A model function is this skeleton plus a `ModelAdapter` (functions/<model>/model.py): adding a
model adds an adapter, not a pipeline.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from cloudevents.core.v1.event import CloudEvent
from minio import Minio
from minio.error import S3Error
from urllib3.exceptions import HTTPError as Urllib3Error

from events import binding, catalogue, storage
from events.models import (
    SegmentTranscribed,
    TranscriptionDispatched,
    TranscriptionFailed,
    TranscriptionProgress,
    TranscriptionTranscribed,
    Word,
)
from events.runtime.function import Runtime, Subscription, TransientError
from events.settings import Settings

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000

# Model processes never reach a hub: a missing model must fail at once, not after minutes of
# retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@dataclass
class Segment:
    start: float
    end: float
    text: str
    words: list[Word] | None = None
    avg_logprob: float | None = None
    no_speech_prob: float | None = None


@dataclass
class Transcript:
    language: str | None
    language_probability: float | None = None
    segments: list[Segment] = field(default_factory=list)


class ModelAdapter(Protocol):
    """What is specific to one model. Both methods block; the skeleton runs them in a thread."""

    name: str

    def load(self) -> None: ...

    def transcribe(
        self,
        audio: np.ndarray,
        language: str | None,
        on_segment: Callable[[Segment], None],
        on_progress: Callable[[float], None],
    ) -> Transcript: ...


class JobFailed(Exception):
    """The job cannot succeed (bad media): reported as a `failed` event, not retried."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def decode_audio(path: Path) -> np.ndarray:
    """Any audio or video container to 16 kHz mono float32, through ffmpeg."""
    if path.stat().st_size == 0:
        raise JobFailed("media_empty", "the media file is empty (0 bytes)")
    command = [
        "ffmpeg",
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-threads",
        "0",
        "-i",
        str(path),
        "-map",
        "0:a:0",
        "-f",
        "s16le",
        "-ac",
        "1",
        "-ar",
        str(SAMPLE_RATE),
        "-",
    ]
    result = subprocess.run(command, capture_output=True, check=False)
    if result.returncode != 0:
        reason = result.stderr.decode(errors="replace").strip().splitlines()
        detail = reason[-1] if reason else f"ffmpeg exited with {result.returncode}"
        if "matches no streams" in detail:
            raise JobFailed("media_no_audio", "the media has no audio track")
        raise JobFailed("media_unreadable", f"the media could not be decoded: {detail}")
    return np.frombuffer(result.stdout, np.int16).astype(np.float32) / 32768.0


class TranscriptionFunction:
    """A model function: the skeleton around one adapter, consuming `transcribe.<model>`."""

    def __init__(self, adapter: ModelAdapter, settings: Settings) -> None:
        self.adapter = adapter
        self.name = adapter.name
        self.settings = settings
        self.store: Minio = storage.client(settings)
        self._loaded = False
        self.load_seconds: float | None = None

    @property
    def subscriptions(self) -> list[Subscription]:
        return [Subscription(catalogue.model_consumer(self.name), self.handle)]

    async def start(self, runtime: Runtime) -> None:
        started = time.perf_counter()
        await asyncio.to_thread(self.adapter.load)
        self.load_seconds = time.perf_counter() - started
        self._loaded = True
        log.info("model loaded in %.2fs", self.load_seconds, extra={"model": self.name})

    async def stop(self) -> None:
        return None

    def ready(self) -> bool:
        return self._loaded

    def app(self) -> Any:
        return None

    async def handle(self, event: CloudEvent) -> AsyncIterator[CloudEvent]:
        job = binding.parse_data(event, TranscriptionDispatched)
        run_id = uuid.uuid4().hex  # one per attempt: optimize keeps only the finished run
        try:
            async for out in self._run(job, run_id):
                yield out
        except JobFailed as error:
            log.warning("job failed: %s", error.message, extra={"job_id": job.job_id})
            failed = TranscriptionFailed(
                job_id=job.job_id,
                code=error.code,
                message=error.message,
                function=self.name,
                run_id=run_id,
            )
            yield self._event(catalogue.FAILED, failed, job.job_id, f"{job.job_id}:failed")

    async def _run(self, job: TranscriptionDispatched, run_id: str) -> AsyncIterator[CloudEvent]:
        timings: dict[str, float] = {}
        with tempfile.TemporaryDirectory(prefix="klipnote-") as workdir:
            yield self._progress(job, run_id, "fetching", 0.0)
            started = time.perf_counter()
            path = Path(workdir) / "media"
            await asyncio.to_thread(self._fetch, job, path)
            timings["fetch"] = time.perf_counter() - started

            yield self._progress(job, run_id, "decoding", 0.0)
            started = time.perf_counter()
            audio = await asyncio.to_thread(decode_audio, path)
            timings["decode"] = time.perf_counter() - started

        audio_seconds = len(audio) / SAMPLE_RATE
        started = time.perf_counter()
        sequence = 0
        async for item in self._transcribe(audio, job.language):
            if isinstance(item, Segment):
                segment = SegmentTranscribed(
                    job_id=job.job_id,
                    run_id=run_id,
                    sequence=sequence,
                    start=item.start,
                    end=item.end,
                    text=item.text,
                    words=item.words,
                    language=job.language,
                    avg_logprob=item.avg_logprob,
                    no_speech_prob=item.no_speech_prob,
                )
                yield self._event(catalogue.SEGMENT, segment, job.job_id, f"{run_id}:{sequence}")
                sequence += 1
            elif isinstance(item, float):
                yield self._progress(job, run_id, "transcribing", item)
            else:
                transcript = item
        timings["transcribe"] = time.perf_counter() - started
        done = TranscriptionTranscribed(
            job_id=job.job_id,
            run_id=run_id,
            model=self.name,
            language=transcript.language,
            language_probability=transcript.language_probability,
            segment_count=sequence,
            audio_seconds=audio_seconds,
            formats=job.formats,
            timings=timings,
        )
        yield self._event(catalogue.TRANSCRIBED, done, job.job_id, f"{run_id}:transcribed")

    async def _transcribe(
        self, audio: np.ndarray, language: str | None
    ) -> AsyncIterator[Segment | float | Transcript]:
        """Run the blocking model in a thread and hand its segments over as they come."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Segment | float | Transcript | BaseException] = asyncio.Queue()

        def put(item: Segment | float | Transcript | BaseException) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def work() -> None:
            try:
                put(self.adapter.transcribe(audio, language, put, lambda f: put(float(f))))
            except BaseException as error:  # handed to the event loop, raised there
                put(error)

        worker = loop.run_in_executor(None, work)
        while True:
            item = await queue.get()
            if isinstance(item, BaseException):
                await worker
                raise JobFailed("model_error", f"{self.name} failed: {item}") from item
            yield item
            if isinstance(item, Transcript):
                await worker
                return

    def _fetch(self, job: TranscriptionDispatched, path: Path) -> None:
        try:
            self.store.fget_object(job.media.bucket, job.media.key, str(path))
        except S3Error as error:
            if error.code in ("NoSuchKey", "NoSuchBucket"):
                raise JobFailed(
                    "media_missing", f"s3://{job.media.bucket}/{job.media.key} does not exist"
                ) from error
            raise TransientError(f"storage error: {error}") from error
        except (OSError, Urllib3Error) as error:  # refused, reset: the store may come back
            raise TransientError(f"storage unreachable: {error}") from error

    def _progress(self, job: TranscriptionDispatched, run_id: str, stage: str, fraction: float) -> CloudEvent:
        progress = TranscriptionProgress(
            job_id=job.job_id,
            run_id=run_id,
            model=self.name,
            stage=stage,  # type: ignore[arg-type]
            fraction=min(max(fraction, 0.0), 1.0),
        )
        return self._event(catalogue.PROGRESS, progress, job.job_id, None)

    def _event(self, kind: catalogue.EventKind, data: Any, job_id: str, event_id: str | None) -> CloudEvent:
        return binding.new_event(kind, data, function=self.name, subject=job_id, event_id=event_id)
