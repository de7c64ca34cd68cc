"""optimize as a function: on `transcribed`, assemble that run's segments (and only that run's),
write the requested formats to the results bucket, publish `completed`; nothing for a job that was
canceled (its model finished before it saw the cancel)."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import AsyncIterator

from cloudevents.core.v1.event import CloudEvent
from minio import Minio
from minio.error import S3Error
from nats.js.errors import NotFoundError

from events import binding, catalogue, lifecycle, storage, tracing
from events.errors import CodedError
from events.models import (
    MEDIA_TYPES,
    ObjectRef,
    OutputFormat,
    SegmentTranscribed,
    TranscriptionCompleted,
    TranscriptionTranscribed,
)
from events.runtime.function import Health, PermanentError, Runtime, Subscription, TransientError
from events.settings import Settings
from functions.optimize import outputs
from functions.optimize.cues import Optimizer

log = logging.getLogger(__name__)
NAME = "optimize"
# Segments asked for in one fetch from the SEGMENTS stream (an hour of speech is a few hundred).
_SEGMENTS_PER_FETCH = 256


class SegmentsIncomplete(CodedError):
    """The transcribed event names more segments than the stream holds for its run (yet)."""

    def __init__(self, message: str) -> None:
        super().__init__("segments_incomplete", message)


class Optimize:
    name = NAME

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store: Minio = storage.client(settings)
        self.optimizer = Optimizer.from_settings(settings)
        self._runtime: Runtime | None = None

    @property
    def subscriptions(self) -> list[Subscription]:
        return [Subscription(catalogue.OPTIMIZE, self.handle)]

    async def start(self, runtime: Runtime) -> None:
        self._runtime = runtime
        await asyncio.to_thread(storage.ensure_buckets, self.store, self.settings)

    async def stop(self) -> None:
        return None

    def health(self) -> Health:
        return Health(ready=self._runtime is not None)

    def app(self) -> None:
        return None

    async def handle(self, event: CloudEvent) -> AsyncIterator[CloudEvent]:
        done = binding.parse_data(event, TranscriptionTranscribed)
        if await self._canceled(done.job_id):
            # The model finished before it saw the cancel: the job ended canceled, with no results.
            log.info("job %s was canceled: no results written", done.job_id)
            return
        started = time.perf_counter()
        try:
            segments = await self.segments_of(done)
        except SegmentsIncomplete as error:
            yield lifecycle.failed(done.job_id, error, function=NAME, run_id=done.run_id)
            return
        ids = {tracing.JOB_ID: done.job_id, tracing.RUN_ID: done.run_id, tracing.MODEL: done.model}
        with tracing.stage("optimize", {**ids, tracing.AUDIO_SECONDS: done.audio_seconds}) as span:
            optimized = await asyncio.to_thread(
                self.optimizer.run, segments, done.audio_seconds, done.language
            )
            span.set_attributes(
                {"klipnote.segment_count": len(segments), "klipnote.cue_count": len(optimized.cues)}
            )
        cues, stats = optimized.cues, optimized.stats
        header = {
            "job_id": done.job_id,
            "model": done.model,
            "language": done.language,
            "language_probability": done.language_probability,
            "audio_seconds": done.audio_seconds,
            "media_info": done.media_info.model_dump(mode="json") if done.media_info else None,
            "stats": stats,
        }
        results: dict[OutputFormat, ObjectRef] = {}
        with tracing.stage("upload", ids) as span:
            for fmt in dict.fromkeys(done.formats):
                results[fmt] = await asyncio.to_thread(
                    self._write, done.job_id, fmt, outputs.render(fmt, cues, header)
                )
            span.set_attributes(
                {
                    "klipnote.formats": list(results),
                    "klipnote.result_bytes": sum(ref.size or 0 for ref in results.values()),
                }
            )
        if await self._canceled(done.job_id):
            # Canceled (or deleted: a delete marks the job canceled first) while the results were
            # written: a delete that listed `<job>/` before they landed would leave them for ever.
            await asyncio.to_thread(self._remove, list(results.values()))
            log.info("job %s was canceled while its results were written: removed them", done.job_id)
            return
        stats["optimize_seconds"] = round(time.perf_counter() - started, 4)
        completed = TranscriptionCompleted(
            job_id=done.job_id,
            run_id=done.run_id,
            model=done.model,
            language=done.language,
            results=results,
            stats=stats,
        )
        # One `completed` per job: a repeated run's completion is a JetStream duplicate.
        yield binding.new_event(
            catalogue.COMPLETED,
            completed,
            function=NAME,
            subject=done.job_id,
            event_id=lifecycle.completed_id(done.job_id),
        )

    async def _canceled(self, job_id: str) -> bool:
        """Whether the job was canceled (`lifecycle.was_canceled`, the JOBS stream); a read that
        fails is retried later (TransientError) rather than results written for a canceled job."""
        assert self._runtime is not None
        try:
            return await lifecycle.was_canceled(self._runtime, job_id)
        except RuntimeError:  # a runtime without JetStream (the test harness): no cancels to read
            return False
        except Exception as error:
            raise TransientError(f"could not read whether job {job_id} was canceled: {error}") from error

    async def segments_of(self, done: TranscriptionTranscribed) -> list[SegmentTranscribed]:
        """The `segment_count` segments of `run_id`, read back from the SEGMENTS stream."""
        assert self._runtime is not None
        if done.segment_count == 0:
            return []
        found: dict[int, SegmentTranscribed] = {}
        subject = catalogue.SEGMENT.subject(done.job_id)
        # Segments are published before `transcribed`, so a gap means a lost segment, not a
        # slow one: waiting a while covers a stream still catching up, then the job fails.
        deadline = time.monotonic() + self.settings.optimize_segment_wait_s
        try:
            async with self._runtime.reading(subject) as segments:
                while len(found) < done.segment_count:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        missing = sorted(set(range(done.segment_count)) - set(found))
                        raise SegmentsIncomplete(
                            f"run {done.run_id} has {len(found)} of {done.segment_count} segments; "
                            f"missing sequence numbers {missing[:20]}"
                        )
                    # What the stream holds, many at a fetch: a round trip per segment would
                    # take longer than optimizing them (optimize_bench --function).
                    for msg in await segments.next_batch(_SEGMENTS_PER_FETCH, remaining):
                        try:
                            event = binding.decode(msg.headers, msg.data)
                            segment = binding.parse_data(event, SegmentTranscribed)
                        except binding.MalformedEvent as error:
                            log.warning("skipping a malformed segment event: %s", error)
                            continue
                        if segment.run_id == done.run_id and segment.sequence < done.segment_count:
                            found[segment.sequence] = segment
        except NotFoundError as error:
            raise TransientError(f"SEGMENTS stream unavailable: {error}") from error
        return [found[index] for index in range(done.segment_count)]

    def _remove(self, results: list[ObjectRef]) -> None:
        """Remove results written for a job canceled meanwhile (S3 answers a missing key with
        success: a repeat is harmless)."""
        try:
            for ref in results:
                self.store.remove_object(ref.bucket, ref.key)
        except S3Error as error:
            raise TransientError(f"could not remove the results of a canceled job: {error}") from error
        except storage.UNREACHABLE as error:
            raise TransientError(f"could not remove the results of a canceled job: {error}") from error

    def _write(self, job_id: str, fmt: OutputFormat, body: bytes) -> ObjectRef:
        key = f"{job_id}/transcript.{fmt}"
        try:
            result = self.store.put_object(
                self.settings.results_bucket,
                key,
                io.BytesIO(body),
                len(body),
                content_type=MEDIA_TYPES[fmt],
            )
        except S3Error as error:
            if error.code in _STORE_REFUSES:  # no retry can help: the job fails with the reason
                raise PermanentError(
                    "results_unwritable", f"s3://{self.settings.results_bucket}: {error}"
                ) from error
            raise TransientError(f"storage error: {error}") from error
        except storage.UNREACHABLE as error:
            raise TransientError(f"storage unreachable: {error}") from error
        return ObjectRef(
            bucket=self.settings.results_bucket,
            key=key,
            etag=result.etag,
            size=len(body),
            content_type=MEDIA_TYPES[fmt],
        )


# Answers of the store that retrying cannot change.
_STORE_REFUSES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket"}


def create(settings: Settings) -> Optimize:
    return Optimize(settings)
