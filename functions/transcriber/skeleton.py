"""The transcription skeleton every model function shares: fetch the media, decode it, run the
model window by window, stream segments and progress as events, report `transcribed` or `failed`.

A model function is this skeleton plus a `ModelAdapter` (functions/<model>/model.py): adding a
model adds an adapter, not a pipeline. The function's lifecycle (`subscriptions`, `start`,
`stop`, `ready`) is the first thing in the class; the job's steps follow.

Warm means warm: `start` loads the model, then (MODEL_WARMUP) runs one short inference through a
job's own path (`warm_up`), and only then is the function ready, so the first job costs what
later ones cost. Long media are transcribed window by window, the first window short
(FIRST_WINDOW_S), so the first segments are out within seconds whatever the file's length.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
from cloudevents.core.v1.event import CloudEvent
from minio import Minio

from events import binding, catalogue, lifecycle, routing, storage, tracing
from events.models import (
    Decoding,
    Diarization,
    LanguageDetected,
    SegmentTranscribed,
    Task,
    TranscriptionDispatched,
    TranscriptionProgress,
    TranscriptionTranscribed,
)
from events.runtime.function import Health, Runtime, Subscription, alive
from events.settings import Settings
from events.tasks import cancel_and_wait
from functions.transcriber.audio import DecodedAudio, Limits, child_env, decode, fetch, windows
from functions.transcriber.cancel import Cancellations, JobCanceled
from functions.transcriber.hub import offline
from functions.transcriber.language import Identified, identify
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
from functions.transcriber.vad import SpeechDetector

# The package's name, as before the skeleton had a module of its own: dashboards and tests
# filter the model functions' log lines by it.
log = logging.getLogger("functions.transcriber")

# What the warm-up hears (3 s spoken by ffmpeg's flite filter, its voice slt): a sentence any Whisper
# decodes with confidence, so the warm-up costs one short decoding, not Whisper's fallback.
WARMUP_TEXT = "The first job costs what later ones cost."
# Formants F1-F3 (Hz) of the vowels of "hod, heed, who'd, head, hawed", an adult male voice
# (Peterson & Barney 1952): the syllables of the warm-up's speech when ffmpeg cannot speak.
_VOWELS = ((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (570, 840, 2410))
_SYLLABLE_S = 0.25


def warmup_audio(workdir: Path) -> DecodedAudio:
    """A few seconds of speech for the warm-up, made inside the image and decoded as a job's
    media is (`audio.decode`, into `workdir`): `WARMUP_TEXT` spoken by ffmpeg's `flite` source
    filter (libflite; Debian's and Ubuntu's ffmpeg, which the images install, have it), else, from
    an ffmpeg without it, `vowels()`."""
    spoken = workdir / "warmup.wav"
    command = [
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-f", "lavfi",
        "-i", f"flite=voice=slt:text='{WARMUP_TEXT}'", "-ar", str(SAMPLE_RATE), "-ac", "1", str(spoken),
    ]  # fmt: skip
    made = subprocess.run(command, capture_output=True, env=child_env(), timeout=60, check=False)
    if made.returncode == 0:
        return decode(spoken, workdir / "warmup.s16le")
    log.warning(
        "ffmpeg has no flite filter (%s): the warm-up hears synthetic vowels, which Whisper decodes "
        "more slowly",
        made.stderr.decode(errors="replace").strip()[-200:],
    )
    pcm = vowels()
    pcm.tofile(workdir / "warmup.s16le")
    return DecodedAudio(workdir / "warmup.s16le", len(pcm))


def vowels(seconds: float = 2.0) -> np.ndarray:
    """`seconds` of synthetic voiced speech, int16 at 16 kHz mono, shape (samples,), the same
    each time: syllables of 0.25 s, each a vowel (`_VOWELS`) on a voice at 100-140 Hz, by
    additive synthesis (each harmonic weighted by the vowel's resonances, falling 6 dB an
    octave). Silero and pyannote both hear it as speech, so a model decodes it rather than
    skipping it as silence."""
    samples = int(seconds * SAMPLE_RATE)
    t = np.arange(samples) / SAMPLE_RATE
    pitch = 120.0 + 20.0 * np.sin(2 * np.pi * 0.7 * t)  # Hz: a falling and rising intonation
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    syllable = (t / _SYLLABLE_S).astype(int)
    formants = np.asarray(_VOWELS, np.float64)[syllable % len(_VOWELS)]  # (samples, 3)
    voice = np.zeros(samples)
    for harmonic in range(1, 40):  # up to 5.6 kHz, under the 8 kHz Nyquist frequency
        frequency = harmonic * pitch
        resonance = sum(
            1.0 / (1.0 + ((frequency - formants[:, i]) / (60.0 + 30.0 * i)) ** 2) for i in range(3)
        )
        voice += resonance / harmonic * np.sin(harmonic * phase)
    voice *= np.sin(np.pi * (t / _SYLLABLE_S % 1.0)) ** 0.5  # each syllable swells and fades
    return np.round(voice / np.abs(voice).max() * 0.5 * 32767).astype(np.int16)


class TranscriptionFunction:
    """A model function: the skeleton around one adapter, consuming `transcribe.<model>` and
    producing segment, progress, `language_detected`, `transcribed` and `failed` events."""

    def __init__(self, adapter: ModelAdapter, settings: Settings) -> None:
        self.adapter = adapter
        self.name = adapter.name
        self.settings = settings
        self.store: Minio = storage.client(settings)
        self.listener: SpeechDetector | None = None  # the VAD language identification listens with
        self.load_seconds: float | None = None
        self.warmup_seconds: float | None = None  # None: no warm-up ran (MODEL_WARMUP, `warms_up`)
        self.loads = 0
        # Jobs handled by this replica: beside `loads`, shows that a warm worker loads nothing per job.
        self.jobs_handled = 0
        # Why the function is not ready, for the readiness probe (None when it is).
        self.problem: str | None = "loading the model"
        # Whether a job was canceled (reads the bus once started: `start`).
        self.cancels = Cancellations(None, settings.cancel_check_interval_s)

    @property
    def subscriptions(self) -> list[Subscription]:
        return [Subscription(catalogue.model_consumer(self.name), self.handle)]

    async def start(self, runtime: Runtime) -> None:
        self.cancels = Cancellations(runtime, self.settings.cancel_check_interval_s)
        started = time.perf_counter()
        try:
            offline()  # before the adapter imports its libraries: they read it at import
            await asyncio.to_thread(self.adapter.load)
            self.listener = await asyncio.to_thread(SpeechDetector)
        except Exception as error:
            # Stay up and say why: a crash loop would only repeat the same failure, faster.
            self.problem = f"the {self.name} model could not be loaded: {error}"
            log.error(self.problem, extra={"model": self.name})
            return
        self.load_seconds = time.perf_counter() - started
        self.loads += 1
        log.info("model loaded in %.2fs", self.load_seconds, extra={"model": self.name})
        # An adapter asks for the warm-up with `warms_up = True` (both models do; the stand-in
        # models of the tests, which count their calls or never return, do not).
        if self.settings.model_warmup and getattr(self.adapter, "warms_up", False):
            self.problem = "warming up the model"
            started = time.perf_counter()
            try:
                await asyncio.to_thread(self.warm_up)
            except Exception as error:
                # Not ready, and why: a model that cannot transcribe a few seconds of speech would
                # fail every job it took (and a crash loop would only repeat it).
                self.problem = f"the {self.name} model failed its warm-up inference: {error}"
                log.error(self.problem, extra={"model": self.name}, exc_info=True)
                return
            self.warmup_seconds = time.perf_counter() - started
            log.info("model warmed up in %.2fs", self.warmup_seconds, extra={"model": self.name})
        self.problem = None

    async def stop(self) -> None:
        return None

    def health(self) -> Health:
        details: dict[str, str | int | float] = {"loads": self.loads, "jobs_handled": self.jobs_handled}
        if self.load_seconds is not None:
            details["load_seconds"] = self.load_seconds
        if self.warmup_seconds is not None:
            details["warmup_seconds"] = self.warmup_seconds
        return Health(ready=self.problem is None, reason=self.problem, details=details)

    def app(self) -> None:
        return None

    async def handle(self, event: CloudEvent) -> AsyncIterator[CloudEvent]:
        job = binding.parse_data(event, TranscriptionDispatched)
        if await self.cancels.canceled(job.job_id):
            # Canceled while it waited on the queue: acknowledged, never started (no event at all).
            log.info("canceled before it started: skipped", extra={"job_id": job.job_id})
            return
        run_id = uuid.uuid4().hex  # one per attempt: optimize keeps only the finished run
        self.jobs_handled += 1
        try:
            async for out in self._run(job, run_id):
                yield out
        except JobCanceled:
            # The canceled event ends the job; this run adds neither `transcribed` nor `failed`.
            log.info("job canceled: the model stopped", extra={"job_id": job.job_id, "run_id": run_id})
        except JobFailed as error:
            log.warning("job failed: %s", error.message, extra={"job_id": job.job_id})
            yield lifecycle.failed(job.job_id, error, function=self.name, run_id=run_id)

    async def _run(self, job: TranscriptionDispatched, run_id: str) -> AsyncIterator[CloudEvent]:
        timings: dict[str, float] = {}
        ids = {tracing.JOB_ID: job.job_id, tracing.RUN_ID: run_id, tracing.MODEL: self.name}
        with tempfile.TemporaryDirectory(prefix="klipnote-") as workdir:
            yield self._progress(job, run_id, "fetching", 0.0)
            started = time.perf_counter()
            media = Path(workdir) / "media"
            with tracing.stage("download", ids) as span:
                await asyncio.to_thread(self._fetch, job, media)
                span.set_attribute("klipnote.media_bytes", media.stat().st_size)
            timings["fetch"] = time.perf_counter() - started

            yield self._progress(job, run_id, "decoding", 0.0)
            started = time.perf_counter()
            with tracing.stage("decode", ids) as span:
                audio = await asyncio.to_thread(
                    decode,
                    media,
                    Path(workdir) / "audio.s16le",
                    Limits.of(self.settings),
                    job.audio_track,
                    lambda seconds: alive(),  # decoding is progress: the heartbeat goes on
                )
                span.set_attribute(tracing.AUDIO_SECONDS, audio.seconds)
                if audio.media is not None:
                    span.set_attributes(
                        {
                            "klipnote.audio_track": audio.media.track.index,
                            "klipnote.start_offset_s": audio.media.start_offset_s,
                            "klipnote.truncated": audio.media.truncated,
                        }
                    )
            media.unlink()  # the decoded copy is all the model needs
            timings["decode"] = time.perf_counter() - started

            language, probability = job.language, job.language_probability
            routed_here = routing.routed_by_detection(job)
            if language is None and (routed_here or self.adapter.default_language is None):
                started = time.perf_counter()
                heard = await self._listen(job, run_id, audio, ids)
                timings["language"] = time.perf_counter() - started
                if heard is not None:
                    language, probability = heard.language, heard.probability
                    if routed_here:  # the record shows what was heard, and ingest hands the job over
                        event_id = lifecycle.language_id(job.job_id)
                        yield self._event(catalogue.LANGUAGE_DETECTED, heard, job.job_id, event_id)
                        if heard.handover:
                            return  # ingest re-dispatches the job to the model the rules name
            language = language or self.adapter.default_language
            if await self.cancels.canceled(job.job_id):  # canceled while fetching, decoding, listening
                raise JobCanceled(job.job_id)
            attribute: SpeakerAttribution | None = None
            if job.diarization is not None:
                yield self._progress(job, run_id, "diarizing", 0.0)
                started = time.perf_counter()
                with tracing.stage("diarize", {**ids, tracing.AUDIO_SECONDS: audio.seconds}):
                    attribute = await self._diarize(audio, job.diarization, job_id=job.job_id)
                timings["diarize"] = time.perf_counter() - started

            started = time.perf_counter()
            sequence = 0
            transcript = Transcript(language=language, language_probability=probability)
            # `segments` spans the publishing of the segments, from the first to the last.
            with contextlib.ExitStack() as publishing:
                with tracing.stage("model", {**ids, tracing.AUDIO_SECONDS: audio.seconds}) as model:
                    async for item in self._transcribe(audio, language, job.decoding, job_id=job.job_id):
                        if isinstance(item, Segment):
                            if sequence == 0:
                                segments = publishing.enter_context(tracing.stage("segments", ids))
                            # A diarized job's segment, split where its speaker changes.
                            for part in self._attributed(item, attribute):
                                segment = SegmentTranscribed(
                                    job_id=job.job_id, run_id=run_id, sequence=sequence, start=part.start,
                                    end=part.end, text=part.text, words=part.words, language=part.language,
                                    avg_logprob=part.avg_logprob, no_speech_prob=part.no_speech_prob,
                                    speaker=part.speaker,
                                )  # fmt: skip
                                yield self._event(
                                    catalogue.SEGMENT,
                                    segment,
                                    job.job_id,
                                    lifecycle.segment_id(run_id, sequence),
                                )
                                sequence += 1
                        elif isinstance(item, float):
                            yield self._progress(job, run_id, "transcribing", item)
                        else:
                            transcript.segments, transcript.alignment = item.segments, item.alignment
                            if transcript.language is None:  # the adapter detected it
                                transcript.language = item.language
                                transcript.language_probability = item.language_probability
                    timings["transcribe"] = time.perf_counter() - started
                    rtf = timings["transcribe"] / audio.seconds
                    model.set_attributes({tracing.RTF: rtf, "klipnote.segment_count": sequence})
                    if transcript.language:
                        model.set_attribute("klipnote.language", transcript.language)
                if sequence:
                    segments.set_attribute("klipnote.segment_count", sequence)
            log.info(
                "transcribed %d segments of %.1fs of audio in %.2fs (RTF %.3f)",
                sequence,
                audio.seconds,
                timings["transcribe"],
                rtf,
                extra={"model": self.name, "run_id": run_id},
            )
        done = TranscriptionTranscribed(
            job_id=job.job_id, run_id=run_id, model=self.name, language=transcript.language,
            language_probability=transcript.language_probability, segment_count=sequence,
            audio_seconds=audio.seconds, formats=job.formats, timings=timings,
            alignment=transcript.alignment, media_info=audio.media,
        )  # fmt: skip
        yield self._event(catalogue.TRANSCRIBED, done, job.job_id, lifecycle.transcribed_id(run_id))

    async def _diarize(
        self, audio: DecodedAudio, diarization: Diarization, *, job_id: str | None = None
    ) -> SpeakerAttribution:
        """How to attribute the job's segments to speakers, from the adapter's diarization of the
        whole file, run in the model's thread as a transcription is: bounded by STALL_TIMEOUT_S
        (the stage reports nothing while it runs, so longer is a stall: `diarization_stalled`)
        and ended by a cancel of job `job_id` (JobCanceled). A thread given up on cannot be
        killed: until it ends, this worker takes no job and says why (`_wait_for_stalled`).
        JobFailed `diarization_unsupported` from a model that cannot name speakers (routing
        never sends one such a job; another system's dispatch might), `diarization_unavailable`
        when the diarization model cannot be loaded, `diarization_error` when it fails."""
        adapter = self.adapter
        if not isinstance(adapter, Diarizes):
            raise JobFailed("diarization_unsupported", f"{self.name} cannot name speakers")
        loop = asyncio.get_running_loop()

        def work() -> SpeakerAttribution:
            return adapter.diarize(audio.window(0, audio.samples), diarization)

        worker = loop.run_in_executor(None, contextvars.copy_context().run, work)
        watch = asyncio.create_task(self.cancels.wait(job_id)) if job_id is not None else None
        stall = self.settings.stall_timeout_s
        try:
            waited: set[asyncio.Future[Any]] = {worker} if watch is None else {worker, watch}
            done, _ = await asyncio.wait(waited, timeout=stall, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait([watch])
        if worker not in done:
            self._wait_for_stalled(worker)
            if watch is not None and watch in done and not watch.cancelled() and watch.exception() is None:
                raise watch.result()
            raise JobFailed(
                "diarization_stalled",
                f"diarizing took longer than {stall:g} s (STALL_TIMEOUT_S): the job was stopped",
            )
        try:
            return worker.result()
        except JobFailed:
            raise
        except ModelUnavailable as error:
            raise JobFailed("diarization_unavailable", str(error)) from error
        except Exception as error:
            raise JobFailed("diarization_error", f"diarization failed: {error}") from error

    @staticmethod
    def _attributed(segment: Segment, attribute: SpeakerAttribution | None) -> list[Segment]:
        """`segment` as its speakers' segments on a diarized job (itself otherwise); JobFailed
        `diarization_error` when the attribution fails (never retried: it would fail again)."""
        if attribute is None:
            return [segment]
        try:
            return attribute(segment)
        except Exception as error:
            raise JobFailed("diarization_error", f"attributing speakers failed: {error}") from error

    async def _transcribe(
        self,
        audio: DecodedAudio,
        language: str | None,
        decoding: Decoding | None = None,
        *,
        job_id: str | None = None,
    ) -> AsyncIterator[Segment | float | Transcript]:
        """Run the blocking model in a thread, window by window, and hand its segments over to
        the event loop as they come (times shifted to the whole file). Raises JobCanceled once job
        `job_id` is canceled (`Cancellations.wait`), after the model's thread has stopped at its
        next report (or, should it not report within STALL_TIMEOUT_S, as a stalled one)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Segment | float | Transcript | BaseException] = asyncio.Queue()
        stopped = threading.Event()

        def put(item: Segment | float) -> None:
            if stopped.is_set():  # the job was given up on: end the model's work at its next report
                raise JobStopped()
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def work() -> None:
            try:
                result: Transcript | BaseException = self.transcribe_audio(audio, language, put, decoding)
            except BaseException as error:  # handed to the event loop, raised there
                result = error
            if not stopped.is_set():
                loop.call_soon_threadsafe(queue.put_nowait, result)

        # The model's thread logs in this job's context (job id, trace id).
        worker = loop.run_in_executor(None, contextvars.copy_context().run, work)
        stall = self.settings.stall_timeout_s

        def canceled(watch: asyncio.Task[JobCanceled]) -> None:
            if not watch.cancelled() and watch.exception() is None:
                stopped.set()  # the model's thread raises JobStopped at its next report
                queue.put_nowait(watch.result())

        # Beside the model: a cancel ends the run at the model's next report, not the file's end.
        watch = asyncio.create_task(self.cancels.wait(job_id)) if job_id is not None else None
        if watch is not None:
            watch.add_done_callback(canceled)
        try:
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), timeout=stall)
                except TimeoutError:
                    stopped.set()
                    self._wait_for_stalled(worker)
                    raise JobFailed(
                        "transcription_stalled",
                        f"the {self.name} model made no progress for {stall:g} s (STALL_TIMEOUT_S): "
                        "the job was stopped",
                    ) from None
                if isinstance(item, JobCanceled):
                    # The next job waits until this one's thread is done with the model.
                    await asyncio.wait([worker], timeout=stall)
                    self._wait_for_stalled(worker)
                    raise item
                if isinstance(item, BaseException):
                    await worker
                    if isinstance(item, JobFailed):
                        raise item
                    raise JobFailed("model_error", f"{self.name} failed: {item}") from item
                yield item
                if isinstance(item, Transcript):
                    await worker
                    return
        finally:
            if watch is not None:
                watch.cancel()

    def _wait_for_stalled(self, worker: asyncio.Future[Any]) -> None:
        """A stalled model's thread cannot be killed: it is told to stop at its next report, and
        until it has, this worker takes no job and says why on its readiness probe."""
        if worker.done():
            return
        stuck = f"the {self.name} model is still busy with a job that stalled; no new job until it stops"
        self.problem = stuck
        log.error(stuck, extra={"model": self.name})

        def recovered(_: asyncio.Future[Any]) -> None:
            if self.problem == stuck:
                self.problem = None
                log.info("the stalled model stopped; taking jobs again", extra={"model": self.name})

        worker.add_done_callback(recovered)

    async def _listen(
        self, job: TranscriptionDispatched, run_id: str, audio: DecodedAudio, ids: dict[str, str]
    ) -> LanguageDetected | None:
        """The language the file speaks and, for a job routed by detection, whether the language
        rules send it to another model (`handover`)."""
        with tracing.stage("language", ids) as span:
            identified = await asyncio.to_thread(self.identify_language, audio)
            if identified is None:
                return None
            heard = LanguageDetected(
                job_id=job.job_id, run_id=run_id, model=self.name, language=identified.language,
                probability=round(identified.probability, 4), speech_seconds=identified.speech_seconds,
                windows=identified.windows,
                handover=routing.routed_by_detection(job)
                and self._leaves(identified.language, job.decoding.task, diarize=job.diarization is not None),
            )  # fmt: skip
            span.set_attributes(
                {
                    "klipnote.language": heard.language,
                    "klipnote.language_probability": heard.probability,
                    "klipnote.speech_seconds": heard.speech_seconds,
                    "klipnote.handover": heard.handover,
                }
            )
        log.info(
            "heard %s (p=%.2f in %.1f s of speech)%s",
            heard.language,
            heard.probability,
            heard.speech_seconds,
            ": handing the job over" if heard.handover else "",
            extra={"model": self.name, "run_id": run_id},
        )
        return heard

    def warm_up(self) -> None:
        """One short inference through a job's own path (blocking), before the function says
        ready (MODEL_WARMUP): a few seconds of speech made in the image (`warmup_audio`: ffprobe
        and ffmpeg as for a job), language identification (the Silero VAD and the model's
        language tokens), then `transcribe_audio` (the adapter's VAD, decoding and, when one is
        configured, alignment) in the adapter's default language or the one heard. Each
        library's first run allocates its buffers and picks its kernels; after this the first
        job costs what later ones cost. What the model makes of it is thrown away. Raises what
        ffmpeg and the adapter raise."""
        with tempfile.TemporaryDirectory(prefix="klipnote-warmup-") as workdir:
            audio = warmup_audio(Path(workdir))
            heard = self.identify_language(audio)
            language = self.adapter.default_language or (heard.language if heard else None)
            self.transcribe_audio(audio, language, lambda item: None)

    def identify_language(self, audio: DecodedAudio) -> Identified | None:
        """The language the file speaks, by the model, from clips of its speech across the whole
        file (blocking; functions/transcriber/language.py)."""
        if self.listener is None:  # start() loads it; a function used without start() loads it here
            self.listener = SpeechDetector()
        return identify(
            audio.window(0, audio.samples),
            self.adapter.detect_language,
            self.listener,
            self.settings.language_id_windows,
        )

    def _leaves(self, language: str, task: Task = "transcribe", *, diarize: bool = False) -> bool:
        """Whether the language rules send a job in `language` to another model than this one; a
        job to translate (or with speakers) only to a model that can translate (name speakers;
        events/routing.py)."""
        try:
            route = routing.choose_model(
                None, language, self.settings, detected=True, task=task, diarize=diarize
            )
            return route.model != self.name
        except routing.RoutingError:
            return False  # no model to hand over to by this function's settings: it keeps the job

    def transcribe_audio(
        self,
        audio: DecodedAudio,
        language: str | None,
        put: Callable[[Segment | float], None],
        decoding: Decoding | None = None,
    ) -> Transcript:
        """The whole decoded file through the model, window by window (blocking): segments and
        progress fractions go to `put` as they come, times relative to the whole file. `language`
        is the file's (the adapter detects it from the first window when it is None); `decoding`
        is the job's task, prompt, hotwords and temperature, given to every window (None: the
        defaults)."""
        whole = Transcript(language=language)
        total = audio.samples
        # The decoded audio is on the file's timeline already (audio.decode pads a late start).
        # A short first window (FIRST_WINDOW_S) puts the first segments out within seconds.
        plan = windows(audio, self.settings.audio_window_s, first_s=self.settings.first_window_s)
        for start, end in plan:
            offset = start / SAMPLE_RATE

            def shifted(
                segment: Segment, offset: float = offset, length: float = (end - start) / SAMPLE_RATE
            ) -> None:
                # A model's times may overshoot its window by a VAD frame: every time is kept
                # inside the window (so never after the media's end), then moved to the file's
                # timeline (to the millisecond).
                def place(time: float) -> float:
                    return round(offset + min(max(time, 0.0), length), 3)

                segment.start, segment.end = place(segment.start), place(segment.end)
                for word in segment.words or []:
                    word.start = None if word.start is None else place(word.start)
                    word.end = None if word.end is None else place(word.end)
                put(segment)

            def progress(fraction: float, start: int = start, end: int = end) -> None:
                put((start + fraction * (end - start)) / total)

            part = self.adapter.transcribe(
                audio.window(start, end), whole.language, shifted, progress, decoding=decoding
            )
            if whole.language is None:
                # The first window's language holds for the rest: one file, one language.
                whole.language = part.language
                whole.language_probability = part.language_probability
            whole.alignment = part.alignment
        return whole

    def _fetch(self, job: TranscriptionDispatched, path: Path) -> None:
        """The job's object into `path` (`audio.fetch`): the version that was admitted, refused
        over MAX_UPLOAD_BYTES before a byte is read, whichever way it came in (upload, bucket
        drop, reference)."""
        fetch(self.store, job.media, path, self.settings.max_upload_bytes)

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
